/* The server configuration: one YAML file, declared in one table in
 * config.c, validated completely before anything starts. */
#ifndef NATTER_CONFIG_H
#define NATTER_CONFIG_H

#include <stddef.h>

#include "core/log.h"

enum listener_type {
	LISTENER_C2S,     /* STARTTLS (RFC 6120), port 5222 */
	LISTENER_C2S_TLS, /* direct TLS (XEP-0368), port 5223, ALPN xmpp-client */
	LISTENER_S2S,     /* server-to-server, STARTTLS, port 5269 */
	LISTENER_S2S_TLS  /* server-to-server, direct TLS, port 5270, ALPN xmpp-server */
};

/* What natter does with one remote domain (s2s.remotes). */
enum s2s_auth_policy {
	S2S_AUTH_DEFAULT,     /* s2s.dialback decides */
	S2S_AUTH_CERTIFICATE, /* a valid certificate (SASL EXTERNAL) or nothing */
	S2S_AUTH_DIALBACK,    /* a valid certificate, else dialback */
	S2S_AUTH_REFUSE       /* no federation with it at all */
};

struct config_remote {
	char *domain;
	enum s2s_auth_policy auth;
	int require_tls;  /* -1: s2s.require_tls */
};

/* Federation (docs/federation.md). */
struct config_s2s {
	int enabled;          /* route to remote domains at all */
	int require_tls;      /* STARTTLS on every link */
	char *ca_file;        /* CAs for remote servers' certificates; NULL = system */
	int dialback;         /* allow server dialback (XEP-0220) without a valid certificate */
	char *secret;         /* dialback key secret; NULL = random per start */
	int connect_timeout;  /* seconds to establish an outgoing link */
	int idle_timeout;     /* seconds before an unused link closes */
	int max_queue;        /* stanzas waiting for a link to come up */
	char *allow;          /* space-separated: only these remote domains; NULL = any */
	char *deny;           /* space-separated: never these */
	struct config_remote *remotes;
	size_t n_remotes;
};

/* TLS on the c2s listeners (docs/security.md, "Session resumption"). */
struct config_tls {
	int session_tickets;  /* resumption by tickets (TLS 1.3 and 1.2) on c2s */
	int ticket_rotation;  /* seconds between ticket keys; a ticket is
			       * accepted while its key is current or previous */
};

struct config_dns {
	char *resolver;       /* "ADDR[@PORT]"; NULL = /etc/resolv.conf */
	char *trust_anchor_file; /* DNSSEC anchors: validation and DANE; NULL = off */
};

/* An auto-buddy group (docs/directory.md): every member sees every other
 * member in the roster, mutually subscribed, under the group's name. */
struct config_group {
	char *dn;    /* the group entry (groupOfNames, groupOfUniqueNames, posixGroup, group) */
	char *name;  /* roster group name; NULL = the entry's cn */
	int room;    /* a chat room whose members are the group's */
	char *room_name;  /* the room's localpart; NULL = from the group's name */
	int room_members_only; /* only the group's members get in */
	char *room_owners;     /* DN of a group whose members own the room, or NULL */
};

/* vcard-temp fields and the directory attribute each is read from; NULL
 * leaves the field out. */
struct config_vcard_map {
	int enabled;     /* serve vCards from the directory */
	int read_only;   /* vCard set answers not-allowed */
	char *fn, *given, *family, *nickname, *email, *tel, *title, *orgunit, *org, *photo;
};

/* An LDAP account source for one virtual host (docs/directory.md). */
struct config_ldap {
	char *uri;            /* space-separated ldap:// or ldaps:// URIs, tried in order */
	int starttls;         /* StartTLS on ldap:// URIs (required when on) */
	char *ca_file;        /* CA certificates for the directory; NULL = system */
	int verify;           /* verify the directory's certificate and name */
	char *bind_dn;        /* service account; NULL = anonymous searches */
	char *bind_password;
	char *bind_password_file; /* first line is the password */
	char *base_dn;        /* where users (and by default groups) live */
	char *user_filter;    /* %u = the escaped username (RFC 4515) */
	char *locked_filter;  /* entries matching it cannot log in; NULL = none */
	char *username_attribute; /* holds the JID localpart, e.g. uid, sAMAccountName */
	char *name_attribute; /* display name for rosters, e.g. cn, displayName */
	int timeout;          /* seconds for one directory operation */
	int pool_size;        /* connections (and threads) */
	int cache_ttl;        /* seconds a successful login is remembered; 0 = never */
	int refresh_interval; /* seconds between group and account list refreshes */
	struct config_group *groups;
	size_t n_groups;
	struct config_vcard_map vcard;
};

/* Kerberos (SASL GSSAPI) for one virtual host (docs/kerberos.md). */
struct config_kerberos {
	char *keytab;   /* holds service/hostname@REALM; NULL = GSSAPI off */
	char *service;  /* "xmpp" */
	char *hostname; /* NULL = the domain */
	char *realms;   /* space-separated realms whose users are this domain's;
			 * NULL = the domain in upper case */
};

struct config_muc {
	int enabled;       /* a multi-user chat service for the host */
	char *domain;      /* its domain; NULL = "conference." + the host's */
	int history;       /* groupchat messages kept per room for joiners */
	int max_occupants; /* per room */
	int max_rooms_per_account; /* rooms one account may have created at once */
	size_t max_message_size;   /* bytes of one message to a room */
	int message_rate;  /* groupchat messages per second, per occupant */
	int message_burst; /* sent at once before the rate applies */
	int max_affiliations; /* owners, admins, members, outcasts per room */
};

/* Whose messages an account archives when it has set no preference
 * (XEP-0313 prefs 'default'). */
enum mam_default { MAM_ALWAYS, MAM_NEVER, MAM_ROSTER };

struct config_mam {
	int enabled;          /* message archives (XEP-0313) for the host */
	enum mam_default def; /* 'default' of accounts without prefs */
	int max_page;         /* results in one page at most */
	int archive_expiry;   /* days: entries older are deleted; 0 = kept */
};

/* Who may create nodes on a host's pubsub service. */
enum pubsub_create {
	PUBSUB_CREATE_LOCAL,  /* accounts of the host */
	PUBSUB_CREATE_ALL,    /* anyone, federated users too */
	PUBSUB_CREATE_ADMINS  /* only the JIDs in admins */
};

struct config_pubsub {
	int enabled;       /* a publish-subscribe service (XEP-0060) for the host */
	char *domain;      /* its domain; NULL = "pubsub." + the host's */
	enum pubsub_create create;
	char *admins;      /* space-separated bare JIDs: owners of every node */
};

/* The archive-all journal of a host (docs/archive.md, "The journal"). */
struct config_journal {
	int enabled;          /* record every message through the host */
	char *dir;            /* segment files; NULL = data_dir/journal/DOMAIN */
	int retention_days;   /* whole segments older are removed; 0 = kept */
	size_t segment_size;  /* bytes of a segment before the next one starts */
	int checkpoint_records; /* a signed checkpoint after this many records */
	int checkpoint_interval; /* ... or after this many seconds with new records */
	int queue_size;       /* records waiting for the writer, at most */
	int queue_wait_ms;    /* a loop waits this long for room, then refuses */
	char *notice;         /* sent to each session at login; NULL = none */
};

/* Whether a push notification (XEP-0357) carries the last message's sender
 * or body: never, when the client opted in at enable, or always. */
enum push_include { PUSH_INCLUDE_NEVER, PUSH_INCLUDE_OPT_IN, PUSH_INCLUDE_ALWAYS };

/* Push notifications of a host (docs/mobile.md, "Push notifications"). */
struct config_push {
	int enabled;           /* accounts may enable push (XEP-0357) */
	int max_registrations; /* app server registrations per account */
	int min_interval;      /* seconds between two notifications to one registration */
	enum push_include include_sender; /* last-message-sender in the summary */
	enum push_include include_body;   /* last-message-body in the summary */
};

enum host_auth {
	HOST_AUTH_INTERNAL, /* SCRAM secrets in natter's store */
	HOST_AUTH_LDAP      /* the directory in 'ldap' */
};

struct config_host {
	char *domain;   /* normalised domain name (IDNA2008 / RFC 7622 domainpart) */
	char *tls_cert; /* PEM certificate chain; NULL = self-signed in data_dir */
	char *tls_key;  /* PEM private key; NULL = self-signed in data_dir */
	enum host_auth auth;
	struct config_ldap ldap;         /* used when auth is HOST_AUTH_LDAP */
	struct config_kerberos kerberos;
	struct config_muc muc;
	struct config_mam mam;
	struct config_pubsub pubsub;
	struct config_journal journal;
	struct config_push push;
};

struct config_listener {
	enum listener_type type;
	char *address; /* numeric IPv4 or IPv6 address */
	int port;
};

struct config_limits {
	size_t max_stanza_size;      /* bytes; larger stanza -> policy-violation */
	int max_depth;               /* element nesting below the stream root */
	int max_attributes;          /* per element */
	int auth_timeout;            /* seconds from connect to authenticated */
	int idle_timeout;            /* seconds of silence before a ping */
	int ping_timeout;            /* seconds to answer that ping */
	int close_timeout;           /* seconds a closing connection may take */
	size_t max_queued_output;    /* bytes queued for one peer before it is cut */
	size_t max_queued_total;     /* bytes queued for all peers, all loops */
	int max_roster_items;        /* contacts per roster */
	int max_offline_messages;    /* offline store quota per account */
	int max_auth_failures;       /* failed SASL attempts per stream, then policy-violation */
	int auth_failures_per_address; /* failed logins one address may have per window */
	int auth_failures_per_account; /* failed logins against one account per window */
	int auth_failure_window;     /* seconds in which those budgets refill */
	int max_unauthenticated_per_address; /* concurrent streams not yet logged in */
	int ipv6_prefix;             /* IPv6 addresses sharing this prefix count as one */
	/* Per-account stores: sizes in bytes as they are sent. */
	size_t max_roster_name_size; /* a roster item's name */
	int max_roster_groups;       /* groups per roster item */
	size_t max_roster_size;      /* a whole roster result */
	size_t max_private_size;     /* private XML (XEP-0049), all namespaces */
	int max_private_items;       /* namespaces of private XML */
	size_t max_vcard_size;       /* one vCard, serialised */
	size_t max_offline_size;     /* offline messages, serialised */
	int max_blocklist_items;     /* block list items (XEP-0191) */
	size_t max_blocklist_size;   /* a whole <blocklist/> result */
	/* Publish-subscribe (PEP and the pubsub services, docs/pubsub.md). */
	int pubsub_max_items;        /* items one node keeps (its max_items at most) */
	size_t pubsub_max_item_size; /* one item, serialised */
	int pubsub_max_nodes;        /* nodes per account (PEP) or per creator (service) */
	int pubsub_max_subscriptions;/* subscriptions and affiliations per node */
	int pubsub_max_notifications;/* notifications one publish sends at most */
	int caps_cache_size;         /* entity capabilities (XEP-0115) versions kept */
	/* Client state indication (XEP-0352, docs/mobile.md). */
	int csi_max_held_stanzas;    /* held for one inactive client; 0 = hold nothing */
	size_t csi_max_held_bytes;   /* their bytes, bookkeeping included */
	/* Fast reconnects (XEP-0484, docs/mobile.md). */
	int fast_token_lifetime;     /* seconds a FAST token is valid; 0 = FAST off */
	int max_fast_tokens;         /* devices per account holding a FAST token */
};

/* Stream management (XEP-0198, docs/mobile.md). */
struct config_sm {
	int resume_timeout;          /* seconds a detached session waits; 0 = no resumption */
	int max_unacked;             /* stanzas one session keeps unacknowledged or queued */
	size_t max_unacked_size;     /* bytes of those */
	int request_every;           /* stanzas sent between the server's ack requests */
};

struct config {
	char *path;          /* file it was read from, NULL for built-in defaults */
	enum log_level log_level;
	char *data_dir;      /* database, generated certificates */
	char *storage;       /* storage driver name: "sqlite" */
	int workers;         /* event loops; 0 = one per core */
	int allow_plain;     /* offer SASL PLAIN (always only after TLS) */
	int scram_iterations;/* PBKDF2 iterations for new passwords */
	int hide_version;    /* jabber:iq:version answers service-unavailable */
	int hide_os_version; /* jabber:iq:version leaves out the <os/> */
	int allow_registration;    /* in-band registration (XEP-0077) before login */
	int registration_interval; /* seconds between two registrations from one
				    * address (IPv6: limits.ipv6_prefix); 0 = no limit */
	int registrations_per_hour; /* in-band registrations, all addresses
				     * together; 0 = no limit */
	struct config_host *hosts;
	size_t n_hosts;
	struct config_listener *listeners;
	size_t n_listeners;
	struct config_limits limits;
	struct config_s2s s2s;
	struct config_dns dns;
	struct config_tls tls;
	struct config_sm sm;
};

/* Fills *cfg with the built-in defaults (the embedded default: domain
 * localhost, c2s on 127.0.0.1:5222 and 127.0.0.1:5223, data_dir
 * "./natter-data", sqlite). Never fails except on out of memory (fatal). */
void config_defaults(struct config *cfg);

/* Reads and validates the YAML file at path into *cfg (defaults for keys not
 * given). On error returns -1 and writes "file:line: message" (NUL
 * terminated) into err; *cfg is then freed. Unknown keys, wrong types, bad
 * values and a missing file are errors. */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/* Frees everything config_defaults/config_load allocated. */
void config_free(struct config *cfg);

/* Returns the host entry for a normalised domain, or NULL. */
const struct config_host *config_find_host(const struct config *cfg, const char *domain);

#endif
