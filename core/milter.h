/* milter: the MTA side of the milter protocol (version 6, as libmilter
 * 8.14 and later, rspamd's proxy and Postfix speak it), sans-I/O. One
 * struct milter is one conversation with one filter: it encodes the
 * commands into <out> (the caller sends those bytes), decodes the
 * filter's packets from what the caller feeds it, keeps the negotiated
 * actions and protocol steps, collects the modifications a filter asks for
 * at end of message and says what the final reply to each command was.
 * struct milter_msg is a message as filters see it (header fields, body,
 * envelope); milter_apply() carries out one filter's modifications on it.
 * libc only; buffers grow with malloc. Any thread, one at a time. */
#ifndef RINGMX_CORE_MILTER_H
#define RINGMX_CORE_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/sv.h"

#define MILTER_VERSION 6u
#define MILTER_CHUNK   65535u /* body octets per BODY packet (libmilter's MILTER_CHUNK_SIZE) */
/* The largest packet taken from a filter (its length field, command
 * included): libmilter's largest data size (smfi_setmaxdatasize) is 1 MiB;
 * anything longer is refused, never buffered. */
#define MILTER_PKT_MAX ((1u << 20) + 64u)

/* Parser results besides a length (STYLE.md: incremental parsers). */
#define MILTER_AGAIN (-2) /* a valid beginning: more bytes are needed */
#define MILTER_BAD   (-1) /* length 0 or over MILTER_PKT_MAX */

/* Commands the MTA sends (libmilter's SMFIC_*). */
#define MILTER_C_ABORT   'A'
#define MILTER_C_BODY    'B'
#define MILTER_C_CONNECT 'C'
#define MILTER_C_MACRO   'D'
#define MILTER_C_BODYEOB 'E'
#define MILTER_C_HELO    'H'
#define MILTER_C_HEADER  'L'
#define MILTER_C_MAIL    'M'
#define MILTER_C_EOH     'N'
#define MILTER_C_OPTNEG  'O'
#define MILTER_C_QUIT    'Q'
#define MILTER_C_RCPT    'R'
#define MILTER_C_DATA    'T'

/* Packets a filter sends (SMFIR_*). */
#define MILTER_R_ADDRCPT     '+'
#define MILTER_R_DELRCPT     '-'
#define MILTER_R_ADDRCPT_PAR '2'
#define MILTER_R_SHUTDOWN    '4'
#define MILTER_R_ACCEPT      'a'
#define MILTER_R_REPLBODY    'b'
#define MILTER_R_CONTINUE    'c'
#define MILTER_R_DISCARD     'd'
#define MILTER_R_CHGFROM     'e'
#define MILTER_R_CONN_FAIL   'f'
#define MILTER_R_ADDHEADER   'h'
#define MILTER_R_INSHEADER   'i'
#define MILTER_R_SETSYMLIST  'l'
#define MILTER_R_CHGHEADER   'm'
#define MILTER_R_PROGRESS    'p'
#define MILTER_R_QUARANTINE  'q'
#define MILTER_R_REJECT      'r'
#define MILTER_R_SKIP        's'
#define MILTER_R_TEMPFAIL    't'
#define MILTER_R_REPLYCODE   'y'

/* Actions a filter may take (SMFIF_*): offered by the MTA, chosen by the
 * filter at negotiation. */
#define MILTER_A_ADDHDRS     0x001u /* add headers */
#define MILTER_A_CHGBODY     0x002u /* replace the body */
#define MILTER_A_ADDRCPT     0x004u /* add recipients */
#define MILTER_A_DELRCPT     0x008u /* delete recipients */
#define MILTER_A_CHGHDRS     0x010u /* change or delete headers (and insert) */
#define MILTER_A_QUARANTINE  0x020u /* hold the message */
#define MILTER_A_CHGFROM     0x040u /* change the sender */
#define MILTER_A_ADDRCPT_PAR 0x080u /* add recipients with ESMTP arguments */
#define MILTER_A_SETSYMLIST  0x100u /* choose the macros it gets */
#define MILTER_A_ALL         0x1ffu

/* Protocol steps (SMFIP_*): the filter asks for stages to be left out
 * (NO*) or not answered (NR_*). */
#define MILTER_P_NOCONNECT   0x000001u
#define MILTER_P_NOHELO      0x000002u
#define MILTER_P_NOMAIL      0x000004u
#define MILTER_P_NORCPT      0x000008u
#define MILTER_P_NOBODY      0x000010u
#define MILTER_P_NOHDRS      0x000020u
#define MILTER_P_NOEOH       0x000040u
#define MILTER_P_NR_HDR      0x000080u
#define MILTER_P_NOUNKNOWN   0x000100u
#define MILTER_P_NODATA      0x000200u
#define MILTER_P_SKIP        0x000400u /* the MTA understands SKIP in the body */
#define MILTER_P_RCPT_REJ    0x000800u /* the filter wants refused recipients too */
#define MILTER_P_NR_CONN     0x001000u
#define MILTER_P_NR_HELO     0x002000u
#define MILTER_P_NR_MAIL     0x004000u
#define MILTER_P_NR_RCPT     0x008000u
#define MILTER_P_NR_DATA     0x010000u
#define MILTER_P_NR_UNKN     0x020000u
#define MILTER_P_NR_EOH      0x040000u
#define MILTER_P_NR_BODY     0x080000u
#define MILTER_P_HDR_LEADSPC 0x100000u /* header values keep their leading space */
/* What ringmx offers: every step may be left out or go unanswered, SKIP
 * and the leading space; not RCPT_REJ (refused recipients are not sent). */
#define MILTER_P_OFFER 0x1ff7ffu

/* By protocol version, as Postfix's milter_protocol (milter8.c) and
 * libmilter (mfdef.h) define them: the steps a version has, which may be
 * left out (2: connect ... end of header; 3: and unknown commands; 4: and
 * DATA; 6: every step, unanswered ones, SKIP, the leading space), and the
 * actions (2 to 4: libmilter's SMFI_V2_ACTS; 6: all). A step a version
 * does not have is never sent to a filter negotiated at it. */
#define MILTER_P_V2                                                                                \
	(MILTER_P_NOCONNECT | MILTER_P_NOHELO | MILTER_P_NOMAIL | MILTER_P_NORCPT |                \
	 MILTER_P_NOBODY | MILTER_P_NOHDRS | MILTER_P_NOEOH)
#define MILTER_P_V3      (MILTER_P_V2 | MILTER_P_NOUNKNOWN)
#define MILTER_P_V4      (MILTER_P_V3 | MILTER_P_NODATA)
#define MILTER_A_V2      0x03fu
#define MILTER_P_NOSENDS (MILTER_P_V4) /* every "leave it out" bit */

/* One decoded packet: views into the caller's bytes. */
struct milter_pkt {
	char cmd;
	struct sv data; /* the octets after the command */
};

/* Decodes the packet at the start of the <len> bytes at <p>. Returns its
 * length on the wire (> 0) and fills <pkt>, MILTER_AGAIN or MILTER_BAD. */
int milter_decode(const char *p, size_t len, struct milter_pkt *pkt);

/* The stages of a conversation, as macros are sent and the SETSYMLIST
 * packet names them (SMFIM_*: the first seven), and what a reply answers. */
enum milter_stage {
	MILTER_ST_CONNECT = 0,
	MILTER_ST_HELO,
	MILTER_ST_MAIL,
	MILTER_ST_RCPT,
	MILTER_ST_DATA,
	MILTER_ST_EOM,
	MILTER_ST_EOH,
	MILTER_ST_HEADER,
	MILTER_ST_BODY,
	MILTER_ST_OPTNEG,
	MILTER_ST_N,
};

/* A final answer to a command. */
enum milter_verdict {
	MILTER_V_NONE = 0, /* none yet */
	MILTER_V_CONTINUE, /* go on */
	MILTER_V_ACCEPT,   /* accept: no more of this message (or connection) to this filter */
	MILTER_V_REJECT,   /* 5xx (the reply in m->reply, or the default one) */
	MILTER_V_TEMPFAIL, /* 4xx likewise */
	MILTER_V_DISCARD,  /* take the message and drop it */
	MILTER_V_SKIP,     /* the body: no more chunks, go to end of message */
};

/* Where the conversation is (m->state). */
enum milter_state {
	MILTER_S_INIT = 0, /* nothing sent */
	MILTER_S_WAIT,     /* a command was sent: its reply is awaited (m->await) */
	MILTER_S_READY,    /* answered: the next command may go */
	MILTER_S_FAILED,   /* a protocol error (m->err): the conversation is over */
};

/* Modifications at end of message, in the order the filter sent them,
 * each a record in m->mods: [type 1][index 4][len1 4][len2 4] bytes1
 * bytes2 (see milter_mod_next()). */
struct milter_mod {
	char type;    /* MILTER_R_ADDHEADER ... MILTER_R_QUARANTINE */
	uint32_t idx; /* INSHEADER: position; CHGHEADER: occurrence (1 = the first) */
	struct sv a;  /* header name, address or body chunk or reason: into m->mods */
	struct sv b;  /* header value, or ESMTP arguments; empty otherwise */
};

struct milter {
	enum milter_state state;
	enum milter_stage await; /* what the awaited reply answers */
	uint32_t version;        /* negotiated (2..6) */
	uint32_t offer_version;  /* offered: MILTER_VERSION unless milter_set_version() */
	uint32_t absent;         /* MILTER_P_NO* steps the offered version lacks: never sent */
	uint32_t actions;        /* MILTER_A_* the filter chose */
	uint32_t proto;          /* MILTER_P_* the filter chose */
	uint32_t offer_actions;  /* what was offered */
	uint32_t offer_proto;
	struct buf out;   /* encoded commands for the caller to send */
	struct buf in;    /* received octets not decoded yet */
	struct buf mods;  /* modifications of this message (records) */
	struct buf reply; /* REPLYCODE text (CRLF between lines, none at the end) */
	struct buf
	    symlist[MILTER_ST_EOH + 1]; /* SETSYMLIST: macro names per stage, space-separated */
	bool has_symlist[MILTER_ST_EOH + 1];
	enum milter_verdict verdict; /* the last final reply */
	unsigned progress;           /* PROGRESS packets seen (a timer restarts on each) */
	char err[128];               /* why it failed (MILTER_S_FAILED) */
};

/* Prepares <m> to offer <actions> and <proto> (MILTER_A_*, MILTER_P_*). */
void milter_init(struct milter *m, uint32_t actions, uint32_t proto);
/* Offers protocol <version> (2, 3, 4 or 6; --milter-protocol) instead of
 * 6: what is offered is cut to what that version has, plus
 * MILTER_P_NR_HDR when <no_header_reply>; the filter must answer with a
 * version no higher. Before milter_send_optneg(). Returns 0 or -EINVAL. */
int milter_set_version(struct milter *m, uint32_t version, bool no_header_reply);
void milter_fini(struct milter *m);

/* A macro for milter_send_macros(): name as libmilter spells it ("j",
 * "{client_addr}"), value NUL-terminated. */
struct milter_macro {
	const char *name, *value;
};

/* The commands. Each appends its packets to m->out and returns true when
 * a reply is awaited (m->state WAIT), false when none is (the filter left
 * the stage out, or asked not to answer it: m->state READY). -1 on no
 * memory. Only in state INIT (optneg) or READY (the others). */
int milter_send_optneg(struct milter *m);
/* SMFIC_MACRO for <stage> (never answered); names outside the filter's
 * SETSYMLIST for that stage are left out. */
int milter_send_macros(struct milter *m, enum milter_stage stage, const struct milter_macro *mv,
                       size_t n);
/* <family>: '4', '6', 'L' (unix socket) or 'U' (unknown); <addr> the
 * address as text; <port> host order. */
int milter_send_connect(struct milter *m, const char *host, char family, uint16_t port,
                        const char *addr);
int milter_send_helo(struct milter *m, const char *helo);
/* MAIL / RCPT: <addr> without brackets (sent as "<addr>"), then the ESMTP
 * arguments, NUL-separated, <nargs> of them at <args>. */
int milter_send_mail(struct milter *m, const char *addr, const char *const *args, size_t nargs);
int milter_send_rcpt(struct milter *m, const char *addr);
int milter_send_data(struct milter *m);
/* One header field: <name> and <value> as milter_msg holds them (value
 * without the leading space, folds as LF). */
int milter_send_header(struct milter *m, struct sv name, struct sv value);
int milter_send_eoh(struct milter *m);
/* One chunk of the body, <n> <= MILTER_CHUNK. */
int milter_send_body(struct milter *m, const char *p, size_t n);
/* End of message: always answered; the modifications come before the
 * final reply. m->mods is emptied first. */
int milter_send_eom(struct milter *m);
/* ABORT (the message is gone) and QUIT: never answered; state READY. */
int milter_send_abort(struct milter *m);
int milter_send_quit(struct milter *m);

/* Whether the filter takes stage <st> at all (NO* not negotiated). */
bool milter_wants(const struct milter *m, enum milter_stage st);

/* Results of milter_input(). */
#define MILTER_IN_WAIT  0 /* no final reply yet (progress or modifications may have come) */
#define MILTER_IN_DONE  1 /* the final reply is in m->verdict (and m->reply); state READY */
#define MILTER_IN_ERROR 2 /* a protocol error: m->err says what; state FAILED */

/* Feeds <n> octets the filter sent. Returns MILTER_IN_*. Octets after a
 * final reply stay in m->in (a filter may only send after a command:
 * they are an error at the next call). */
int milter_input(struct milter *m, const char *p, size_t n);

/* Iterates m->mods: start with *<it> = 0; false at the end. */
bool milter_mod_next(const struct milter *m, size_t *it, struct milter_mod *mod);

/* ---- the message as filters see it ---- */

/* A header field of a message: offsets into msg->hdrs. */
struct milter_field {
	size_t at, len;  /* the whole field, its final CRLF included */
	size_t name_len; /* "Subject" */
	size_t value_at; /* after the colon */
};

struct milter_msg {
	struct buf hdrs;   /* the header block, each field ending in CRLF; no empty line */
	struct buf fields; /* struct milter_field, in order */
	struct buf body;   /* after the empty line (that line not included) */
	bool has_sep;      /* the message had the empty line */
	struct buf from;   /* sender without <> */
	struct buf rcpts;  /* recipients without <>, each followed by NUL */
	unsigned nrcpt;
	bool quarantined;
	struct buf reason;  /* the quarantine reason */
	bool body_replaced; /* a filter replaced the body (milter_apply()) */
};

/* The end of the header block at the start of the content <p>,<n> (CRLF
 * lines) as milter_msg_load() would find it after a Received: header: the
 * offset where the body starts (after the empty line, or at the first line
 * that is not part of a header field). Returns 1 and sets *<hlen> when the
 * <n> octets decide it; 0 when more are needed, unless <final> (no more
 * will be looked at: the content ends there, or the header block is too
 * large to hold): then 1, *<hlen> the end of the last complete line.
 * Lets io/ send the header fields before the body has arrived. */
int milter_hdr_end(const char *p, size_t n, bool final, size_t *hlen);

/* Splits the content <p>,<n> (CRLF lines) into header fields and body;
 * copies the envelope. Returns 0 or -ENOMEM. A line that is not a header
 * field (no colon in a name of printable octets) starts the body, as at a
 * next hop. */
int milter_msg_load(struct milter_msg *msg, const char *p, size_t n, struct sv from,
                    const char *rcpts, size_t rcpts_len, unsigned nrcpt);
void milter_msg_fini(struct milter_msg *msg);
size_t milter_msg_nfields(const struct milter_msg *msg);
/* Field <i>'s name and its value as sent to a filter: after the colon,
 * without the first space unless <leadspc>, folds as LF, no final CRLF;
 * into <tmp> (reused). */
int milter_msg_field(const struct milter_msg *msg, size_t i, bool leadspc, struct buf *tmp,
                     struct sv *name, struct sv *value);
/* Writes the content again (header block, the empty line when there is a
 * body or there was one, body) into <out> (emptied first). */
int milter_msg_write(const struct milter_msg *msg, struct buf *out);

/* Carries out <m>'s modifications on <msg>, in order (milter_input()
 * checked each one). Returns 0, or -ENOMEM with <why> filled: the message
 * must not go out half-modified, the caller gives the default action.
 * Every recipient deleted leaves msg->nrcpt 0: nothing to deliver. */
int milter_apply(const struct milter *m, struct milter_msg *msg, char *why, size_t whylen);

#endif
