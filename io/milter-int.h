/* milter-int: what io/milter.c (the filters' connections and the chain)
 * and io/milter_stream.c (the message as it arrives: header block, body
 * chunks, the segment it spills into) share. Worker thread only. */
#ifndef RINGMX_IO_MILTER_INT_H
#define RINGMX_IO_MILTER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/milter.h"
#include "io/conn.h"
#include "io/types-t.h"

#define MF_TEMPFAIL_REPLY "451 4.7.1 Service unavailable - try again later"
#define MF_REJECT_REPLY   "550 5.7.1 Command rejected"
#define MF_DISCARD_REPLY  "250 2.0.0 Ok: discarded by a content filter"
/* What ringmx lets a filter do: everything (quarantine: the message is
 * spooled held, never delivered, listed "held" by `ringmx queue`). */
#define MF_ACTIONS MILTER_A_ALL

enum mf_state {
	MF_DOWN = 0,   /* not connected yet */
	MF_CONNECTING, /* the connect is in flight */
	MF_OPEN,       /* negotiated: commands may go */
	MF_SKIP,       /* it accepted the connection: left out for the session */
	MF_FAILED,     /* failed: the default action for the session */
};

enum mf_phase {
	MP_IDLE = 0,
	MP_OPTNEG, /* the negotiation */
	MP_CONN,   /* CONNECT */
	MP_HELO,
	MP_MAIL,
	MP_RCPT,
	MP_DATA,
	MP_HDR, /* header field <hdr> */
	MP_EOH,
	MP_BODY, /* the chunk at <body_off> */
	MP_EOM,
};

/* What a filter's step came to. */
enum mf_step {
	MS_WAIT, /* a reply or the connect is awaited */
	MS_NEXT, /* this filter is through with the operation: the next one */
	MS_STOP, /* the operation ends here (ch->reply, or ch->discard) */
};

enum mc_op { MC_NONE = 0, MC_MAIL, MC_RCPT, MC_MSG };

struct mchain;

struct mfilt {
	struct ring_conn rc; /* first: user_data names both */
	struct milter m;
	const struct milter_target *t; /* its address, in <snap> or the gateway's */
	const struct conf *cf;         /* its timeout, default action, protocol */
	struct tables *snap;           /* held while it lives; NULL: the startup ones */
	struct mchain *ch;             /* NULL once the session is gone (closing) */
	struct worker *w;
	unsigned idx; /* its --milter */
	enum mf_state st;
	enum mf_phase phase;
	bool in_msg;   /* it got a MAIL not ended by its end of message or an ABORT */
	bool msg_done; /* it took its decision on this message: left out until the next MAIL */
	bool skip;     /* it answered SKIP: no more of the body, the end of message next */
	int in_res;    /* MILTER_IN_* of the last input, acted on after the receive */
	size_t hdr, body_off;
	int64_t deadline;          /* ms: the awaited reply or connect must be in by then */
	struct buf refuse;         /* it refused the connection (CONNECT or HELO): every MAIL */
	struct mfilt *prev, *next; /* the worker's list */
};

struct mchain {
	struct conn *c;
	unsigned n;
	const struct milter_target *targets; /* <n> of them: the session's filters */
	const struct conf *mcf;              /* the options they run under */
	struct tables *snap;                 /* the reload's snapshot they are in, held */
	struct mfilt *f[CONF_MAX_MILTERS];
	enum mc_op op;
	unsigned cur;     /* the filter the operation is at */
	bool starting;    /* inside milter_command() / milter_message() */
	bool nop;         /* a UD_MILTER_NOP is in flight */
	bool dead;        /* the session went while it was: freed at its completion */
	bool discard;     /* a filter discarded the message */
	struct buf reply; /* the operation's refusal; empty: none */
	unsigned refused_by;
	struct milter_msg msg;
	struct buf tmp;
	/* The message as it streams (io/milter_stream.c). */
	uint32_t serial;    /* tx.serial of the message; another: the client reset it */
	bool hdr_done;      /* the header block is in <msg>: the message went to the filters */
	bool data_end;      /* the content is complete (milter_message()) */
	bool early;         /* the chain answered the message before its end */
	bool live_off;      /* no filter takes the body as it comes any more */
	bool spilled;       /* the body streams into its segment (c->sp) at <body_at> */
	bool reading;       /* a read of the body back from the segment is in flight */
	struct mfilt *live; /* the filter the body goes to as it comes */
	uint64_t fed;       /* body octets seen so far */
	uint64_t pend_base; /* body offset of pend's first octet */
	struct buf pend;    /* body octets not yet sent to <live> */
	uint64_t body_len;  /* at data_end: the body's length */
	uint64_t disk_len;  /* of it, on the disk (the rest in tx.body) */
	uint64_t body_at;   /* the body's offset in the segment */
	struct buf rbuf;    /* a chunk read back from the segment */
	struct mfilt *rd_f; /* the filter it is read for */
};

/* io/milter.c */
const char *mf_name(const struct mfilt *f);
/* A command of <f>'s was appended (<r> what milter_send_*() returned):
 * sent; MS_WAIT when its reply is awaited. */
enum mf_step mf_sent(struct worker *w, struct mfilt *f, int r);
/* <f> fails while the operation is at it (logged): the default action. */
enum mf_step mf_fail(struct worker *w, struct mfilt *f, const char *why);
void mf_send_macros(struct mfilt *f, enum milter_stage st);
/* The operation at ch->cur came to <r>: on to the next filter, or the end. */
void chain_next(struct worker *w, struct mchain *ch, enum mf_step r);
/* Runs <op> through the chain; or, with <reply>, answers it so. */
void chain_start(struct worker *w, struct mchain *ch, enum mc_op op, const char *reply);
/* Runs the operation from ch->cur on; at its end the answer (in a NOP's
 * completion while ch->starting). */
void chain_run(struct worker *w, struct mchain *ch);
void chain_free(struct mchain *ch);

/* io/milter_stream.c */
/* <f> is at the body (MP_BODY, its last command answered): the next chunk,
 * the end of message, or MS_WAIT until more of the body is there. */
enum mf_step mf_body_step(struct worker *w, struct mfilt *f);
/* <f> leaves the message operation (answered, failed, refused). */
void stream_leave(struct mchain *ch, struct mfilt *f);
/* The content is complete (milter_message()). Returns true. */
bool stream_message_end(struct worker *w, struct mchain *ch);
/* After a filter's completion: the client's input goes on if the filter
 * took enough of the body that waited for it. */
void stream_flow(struct worker *w, struct mchain *ch);
/* A new transaction (MAIL): nothing of the last message is left. */
void stream_reset(struct mchain *ch);
/* The spooled message as the filters left it, when its body is in its
 * segment: the envelope and header block into c->rec and c->rcvd to fill
 * the segment's head. Returns 0, or a reply refusing the message. */
const char *stream_spilled_head(struct worker *w, struct mchain *ch);

#endif
