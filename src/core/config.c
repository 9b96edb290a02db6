/* The server configuration (config.h).
 *
 * Every key is declared once, in the tables below: its name, type, where it
 * is stored, its default (written as it would be in the file), its limits
 * and one line of documentation. The same code reads the defaults and the
 * file, so a default can never be a value the file would refuse.
 *
 * The file is read with libyaml's event API rather than its document API:
 * each event carries the line it started on, which is what every error
 * message needs, and nothing larger than one scalar is ever held. Aliases
 * are refused, so an alias bomb cannot expand.
 *
 * Relative paths (data_dir, tls_cert, tls_key) are kept as written, i.e.
 * relative to the working directory of the process that reads the file. */
#include "core/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "jid/jid.h"

/* Enum values are stored through an int; both enums must be int-sized. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum log_level is not int-sized");
_Static_assert(sizeof(enum listener_type) == sizeof(int), "enum listener_type is not int-sized");
_Static_assert(sizeof(enum host_auth) == sizeof(int), "enum host_auth is not int-sized");
_Static_assert(sizeof(enum pubsub_create) == sizeof(int), "enum pubsub_create is not int-sized");
_Static_assert(sizeof(enum s2s_auth_policy) == sizeof(int), "enum s2s_auth_policy is not int-sized");

enum key_type {
	KEY_STRING,  /* any non-empty scalar; char * */
	KEY_FILE,    /* path of a file readable now; char * */
	KEY_DOMAIN,  /* domain normalised by jid_prep_domain(); char * */
	KEY_ADDRESS, /* numeric IPv4 or IPv6 address; char * */
	KEY_CHOICE,  /* one of values; char * */
	KEY_ENUM,    /* one of values, stored as its index; int-sized enum */
	KEY_INT,     /* plain integer in [min, max]; int */
	KEY_SIZE,    /* plain integer in [min, max]; size_t */
	KEY_BOOL,    /* plain true/false (yes/no, on/off); int 0 or 1 */
	KEY_MAP,     /* nested mapping; a struct described by section */
	KEY_LIST     /* list of mappings; array pointer at offset, size_t
		      * count at count_offset, items described by section */
};

struct config_parser;
struct config_section;

struct config_key {
	const char *name;
	enum key_type type;
	size_t offset;              /* of the field in its section's struct */
	const char *def;            /* default in file syntax; NULL = none */
	long long min, max;         /* KEY_INT, KEY_SIZE */
	const char *const *values;  /* KEY_CHOICE, KEY_ENUM; NULL-terminated */
	const struct config_section *section; /* KEY_MAP, KEY_LIST */
	size_t count_offset;        /* KEY_LIST */
	bool required;              /* must be given in its mapping */
	bool nullable;              /* KEY_STRING: ~ or "" sets it to NULL (off) */
	const char *doc;
};

struct config_section {
	const char *what;             /* names the mapping in messages */
	const struct config_key *keys;
	size_t n_keys;
	size_t size;                  /* of the struct the keys live in */
	/* Checks that span keys, after one mapping was read. items is the
	 * array (the struct itself outside lists), idx the item just read,
	 * lines[k] the line key k was given on (0 = absent), line the line
	 * the mapping started on. Returns 0, or -1 after config_fail(). */
	int (*check)(struct config_parser *p, void *items, size_t idx,
		     const size_t *lines, size_t line);
};

struct config_parser {
	yaml_parser_t yaml;
	const char *path; /* for messages */
	char *err;
	size_t errlen;
};

/* Keys per mapping are few; lines[] is sized by this. */
#define CONFIG_MAX_KEYS 48

static int config_fail(struct config_parser *p, size_t line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int config_check_host(struct config_parser *p, void *items, size_t idx,
			     const size_t *lines, size_t line);
static int config_check_listener(struct config_parser *p, void *items, size_t idx,
				 const size_t *lines, size_t line);

/* Same order as enum log_level and enum listener_type. */
static const char *const config_log_levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const config_listener_types[] = { "c2s", "c2s_tls", "s2s", "s2s_tls", NULL };
static const char *const config_s2s_auths[] = { "default", "certificate", "dialback", "refuse",
						NULL };
/* The storage drivers storage_driver_find() knows. */
static const char *const config_storage_drivers[] = { "sqlite", NULL };

static const char *const config_host_auths[] = { "internal", "ldap", NULL };

static const struct config_key config_group_keys[] = {
	{ .name = "dn", .type = KEY_STRING, .required = true,
	  .offset = offsetof(struct config_group, dn),
	  .doc = "DN of the group entry; nested groups among its members count too" },
	{ .name = "name", .type = KEY_STRING,
	  .offset = offsetof(struct config_group, name),
	  .doc = "roster group name shown to members; default: the entry's cn" },
	{ .name = "room", .type = KEY_BOOL, .def = "false",
	  .offset = offsetof(struct config_group, room),
	  .doc = "a persistent chat room for the group, its members kept in step (docs/muc.md)" },
	{ .name = "room_name", .type = KEY_STRING,
	  .offset = offsetof(struct config_group, room_name),
	  .doc = "the room's name (JID localpart); default: the group's name in lower case" },
	{ .name = "room_members_only", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_group, room_members_only),
	  .doc = "only the group's members get in" },
	{ .name = "room_owners", .type = KEY_STRING,
	  .offset = offsetof(struct config_group, room_owners),
	  .doc = "DN of a group whose members own the room; default: nobody (the operator)" },
};

static const struct config_section config_group_section = {
	.what = "a groups entry",
	.keys = config_group_keys,
	.n_keys = sizeof config_group_keys / sizeof config_group_keys[0],
	.size = sizeof(struct config_group),
};

#define VCARD_KEY(field, def_, what)                                           \
	{ .name = #field, .type = KEY_STRING, .def = def_, .nullable = true,  \
	  .offset = offsetof(struct config_vcard_map, field),                 \
	  .doc = "directory attribute for the vCard's " what "; ~ leaves it out" }

static const struct config_key config_vcard_keys[] = {
	{ .name = "enabled", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_vcard_map, enabled),
	  .doc = "serve vCards (XEP-0054) and avatar hashes (XEP-0153) from the directory" },
	{ .name = "read_only", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_vcard_map, read_only),
	  .doc = "refuse vCard changes (not-allowed); false keeps a user's own vCard instead" },
	VCARD_KEY(fn, "cn", "FN (full name)"),
	VCARD_KEY(given, "givenName", "N/GIVEN"),
	VCARD_KEY(family, "sn", "N/FAMILY"),
	VCARD_KEY(nickname, "displayName", "NICKNAME"),
	VCARD_KEY(email, "mail", "EMAIL/USERID"),
	VCARD_KEY(tel, "telephoneNumber", "TEL/NUMBER"),
	VCARD_KEY(title, "title", "TITLE"),
	VCARD_KEY(orgunit, "ou", "ORG/ORGUNIT"),
	VCARD_KEY(org, "o", "ORG/ORGNAME"),
	VCARD_KEY(photo, "jpegPhoto", "PHOTO (JPEG)"),
};

static const struct config_section config_vcard_section = {
	.what = "vcard",
	.keys = config_vcard_keys,
	.n_keys = sizeof config_vcard_keys / sizeof config_vcard_keys[0],
	.size = sizeof(struct config_vcard_map),
};

static int config_check_ldap(struct config_parser *p, void *items, size_t idx,
			     const size_t *lines, size_t line);

static const struct config_key config_ldap_keys[] = {
	{ .name = "uri", .type = KEY_STRING,
	  .offset = offsetof(struct config_ldap, uri),
	  .doc = "ldap:// or ldaps:// URIs separated by spaces, tried in order (failover)" },
	{ .name = "starttls", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_ldap, starttls),
	  .doc = "StartTLS on ldap:// URIs; a directory that refuses it is not used" },
	{ .name = "ca_file", .type = KEY_FILE,
	  .offset = offsetof(struct config_ldap, ca_file),
	  .doc = "PEM CA certificates the directory's certificate must chain to; default: the system's" },
	{ .name = "verify", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_ldap, verify),
	  .doc = "verify the directory's certificate and host name" },
	{ .name = "bind_dn", .type = KEY_STRING,
	  .offset = offsetof(struct config_ldap, bind_dn),
	  .doc = "service account natter searches as; default: anonymous" },
	{ .name = "bind_password", .type = KEY_STRING,
	  .offset = offsetof(struct config_ldap, bind_password),
	  .doc = "its password (or bind_password_file)" },
	{ .name = "bind_password_file", .type = KEY_FILE,
	  .offset = offsetof(struct config_ldap, bind_password_file),
	  .doc = "file whose first line is the service account's password" },
	{ .name = "base_dn", .type = KEY_STRING,
	  .offset = offsetof(struct config_ldap, base_dn),
	  .doc = "subtree searched for users" },
	{ .name = "user_filter", .type = KEY_STRING, .def = "(&(objectClass=person)(uid=%u))",
	  .offset = offsetof(struct config_ldap, user_filter),
	  .doc = "filter finding one user; %u is the username, escaped (RFC 4515)" },
	{ .name = "locked_filter", .type = KEY_STRING,
	  .offset = offsetof(struct config_ldap, locked_filter),
	  .doc = "users whose entry matches it cannot log in; default: none" },
	{ .name = "username_attribute", .type = KEY_STRING, .def = "uid",
	  .offset = offsetof(struct config_ldap, username_attribute),
	  .doc = "attribute holding the username (the JID localpart)" },
	{ .name = "name_attribute", .type = KEY_STRING, .def = "cn",
	  .offset = offsetof(struct config_ldap, name_attribute),
	  .doc = "attribute holding the name shown in rosters" },
	{ .name = "timeout", .type = KEY_INT, .def = "5", .min = 1, .max = 300,
	  .offset = offsetof(struct config_ldap, timeout),
	  .doc = "seconds one directory operation may take before the directory counts as down" },
	{ .name = "pool_size", .type = KEY_INT, .def = "4", .min = 1, .max = 64,
	  .offset = offsetof(struct config_ldap, pool_size),
	  .doc = "directory connections (each with its own thread)" },
	{ .name = "cache_ttl", .type = KEY_INT, .def = "60", .min = 0, .max = 86400,
	  .offset = offsetof(struct config_ldap, cache_ttl),
	  .doc = "seconds a successful login is remembered (a salted hash); 0 = no cache" },
	{ .name = "refresh_interval", .type = KEY_INT, .def = "300", .min = 5, .max = 86400,
	  .offset = offsetof(struct config_ldap, refresh_interval),
	  .doc = "seconds between reads of the groups and of the list of accounts" },
	{ .name = "groups", .type = KEY_LIST, .section = &config_group_section,
	  .offset = offsetof(struct config_ldap, groups),
	  .count_offset = offsetof(struct config_ldap, n_groups),
	  .doc = "auto-buddy groups: members see each other, mutually subscribed" },
	{ .name = "vcard", .type = KEY_MAP, .section = &config_vcard_section,
	  .offset = offsetof(struct config_ldap, vcard),
	  .doc = "vCards from the directory" },
};

static const struct config_section config_ldap_section = {
	.what = "ldap",
	.keys = config_ldap_keys,
	.n_keys = sizeof config_ldap_keys / sizeof config_ldap_keys[0],
	.size = sizeof(struct config_ldap),
	.check = config_check_ldap,
};

static const struct config_key config_kerberos_keys[] = {
	{ .name = "keytab", .type = KEY_FILE,
	  .offset = offsetof(struct config_kerberos, keytab),
	  .doc = "keytab with the key of service/hostname@REALM; turns SASL GSSAPI on" },
	{ .name = "service", .type = KEY_STRING, .def = "xmpp",
	  .offset = offsetof(struct config_kerberos, service),
	  .doc = "service part of the principal" },
	{ .name = "hostname", .type = KEY_STRING,
	  .offset = offsetof(struct config_kerberos, hostname),
	  .doc = "host part of the principal; default: the domain" },
	{ .name = "realms", .type = KEY_STRING,
	  .offset = offsetof(struct config_kerberos, realms),
	  .doc = "realms (space-separated) whose user@REALM is user@domain; default: the domain in upper case" },
};

static const struct config_section config_kerberos_section = {
	.what = "kerberos",
	.keys = config_kerberos_keys,
	.n_keys = sizeof config_kerberos_keys / sizeof config_kerberos_keys[0],
	.size = sizeof(struct config_kerberos),
};

static const struct config_key config_muc_keys[] = {
	{ .name = "enabled", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_muc, enabled),
	  .doc = "serve multi-user chat rooms (XEP-0045) for the host" },
	{ .name = "domain", .type = KEY_DOMAIN,
	  .offset = offsetof(struct config_muc, domain),
	  .doc = "the chat service's domain; default: conference. and the host's domain" },
	{ .name = "history", .type = KEY_INT, .def = "20", .min = 0, .max = 1000,
	  .offset = offsetof(struct config_muc, history),
	  .doc = "groupchat messages a room keeps to show joiners" },
	{ .name = "max_occupants", .type = KEY_INT, .def = "200", .min = 1, .max = 100000,
	  .offset = offsetof(struct config_muc, max_occupants),
	  .doc = "most occupants in one room; one more gets service-unavailable" },
	{ .name = "max_rooms_per_account", .type = KEY_INT, .def = "50", .min = 0, .max = 100000,
	  .offset = offsetof(struct config_muc, max_rooms_per_account),
	  .doc = "rooms one account may have created and still exist; more: not-allowed" },
	{ .name = "max_message_size", .type = KEY_SIZE, .def = "65536", .min = 1024,
	  .max = 16 * 1024 * 1024, .offset = offsetof(struct config_muc, max_message_size),
	  .doc = "bytes of one message to a room; larger: not-acceptable" },
	{ .name = "message_rate", .type = KEY_INT, .def = "2", .min = 1, .max = 100000,
	  .offset = offsetof(struct config_muc, message_rate),
	  .doc = "groupchat messages per second one occupant may send, on average" },
	{ .name = "message_burst", .type = KEY_INT, .def = "10", .min = 1, .max = 100000,
	  .offset = offsetof(struct config_muc, message_burst),
	  .doc = "groupchat messages one occupant may send at once; more: resource-constraint" },
	{ .name = "max_affiliations", .type = KEY_INT, .def = "10000", .min = 1, .max = 1000000,
	  .offset = offsetof(struct config_muc, max_affiliations),
	  .doc = "owners, admins, members and outcasts of one room; a change past it: "
		 "resource-constraint" },
};

static const struct config_section config_muc_section = {
	.what = "muc",
	.keys = config_muc_keys,
	.n_keys = sizeof config_muc_keys / sizeof config_muc_keys[0],
	.size = sizeof(struct config_muc),
};

static const char *const config_mam_defaults[] = { "always", "never", "roster", NULL };

static const struct config_key config_mam_keys[] = {
	{ .name = "enabled", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_mam, enabled),
	  .doc = "keep each account's message archive (XEP-0313 MAM) and rooms' archives" },
	{ .name = "default", .type = KEY_ENUM, .def = "always", .values = config_mam_defaults,
	  .offset = offsetof(struct config_mam, def),
	  .doc = "what an account archives until it sets its own preference: always, never, or "
		 "roster (only messages with contacts in its roster)" },
	{ .name = "max_page", .type = KEY_INT, .def = "100", .min = 1, .max = 1000,
	  .offset = offsetof(struct config_mam, max_page),
	  .doc = "results in one page of a query at most; a larger <max/> is cut to it" },
	{ .name = "archive_expiry", .type = KEY_INT, .def = "0", .min = 0, .max = 365000,
	  .offset = offsetof(struct config_mam, archive_expiry),
	  .doc = "archived messages older than this are deleted (checked hourly); 0 keeps them" },
};

static const struct config_section config_mam_section = {
	.what = "mam",
	.keys = config_mam_keys,
	.n_keys = sizeof config_mam_keys / sizeof config_mam_keys[0],
	.size = sizeof(struct config_mam),
};

static const char *const config_pubsub_creates[] = { "local", "all", "admins", NULL };

static const struct config_key config_pubsub_keys[] = {
	{ .name = "enabled", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_pubsub, enabled),
	  .doc = "serve a publish-subscribe service (XEP-0060) for the host" },
	{ .name = "domain", .type = KEY_DOMAIN,
	  .offset = offsetof(struct config_pubsub, domain),
	  .doc = "the pubsub service's domain; default: pubsub. and the host's domain" },
	{ .name = "create", .type = KEY_ENUM, .def = "local", .values = config_pubsub_creates,
	  .offset = offsetof(struct config_pubsub, create),
	  .doc = "who may create nodes: local (the host's accounts), all, or admins" },
	{ .name = "admins", .type = KEY_STRING, .nullable = true,
	  .offset = offsetof(struct config_pubsub, admins),
	  .doc = "space-separated bare JIDs that own every node of the service" },
};

static const struct config_section config_pubsub_section = {
	.what = "pubsub",
	.keys = config_pubsub_keys,
	.n_keys = sizeof config_pubsub_keys / sizeof config_pubsub_keys[0],
	.size = sizeof(struct config_pubsub),
};

static const struct config_key config_journal_keys[] = {
	{ .name = "enabled", .type = KEY_BOOL, .def = "false",
	  .offset = offsetof(struct config_journal, enabled),
	  .doc = "record every message through the host in a signed, hash-chained journal (docs/archive.md)" },
	{ .name = "dir", .type = KEY_STRING,
	  .offset = offsetof(struct config_journal, dir),
	  .doc = "directory of the journal's segment files; default: data_dir/journal/DOMAIN" },
	{ .name = "retention_days", .type = KEY_INT, .def = "0", .min = 0, .max = 36500,
	  .offset = offsetof(struct config_journal, retention_days),
	  .doc = "whole segments last written longer ago are removed; 0 = kept for ever" },
	{ .name = "segment_size", .type = KEY_SIZE, .def = "67108864", .min = 4096,
	  .max = 1024LL * 1024 * 1024, .offset = offsetof(struct config_journal, segment_size),
	  .doc = "bytes of one segment file before the next one starts" },
	{ .name = "checkpoint_records", .type = KEY_INT, .def = "1000", .min = 1, .max = 10000000,
	  .offset = offsetof(struct config_journal, checkpoint_records),
	  .doc = "a signed checkpoint after this many records" },
	{ .name = "checkpoint_interval", .type = KEY_INT, .def = "60", .min = 1, .max = 86400,
	  .offset = offsetof(struct config_journal, checkpoint_interval),
	  .doc = "seconds after which records not yet under a checkpoint get one" },
	{ .name = "queue_size", .type = KEY_INT, .def = "10000", .min = 1, .max = 10000000,
	  .offset = offsetof(struct config_journal, queue_size),
	  .doc = "records waiting for the writer at most; past it loops wait, then refuse" },
	{ .name = "queue_wait_ms", .type = KEY_INT, .def = "200", .min = 0, .max = 10000,
	  .offset = offsetof(struct config_journal, queue_wait_ms),
	  .doc = "milliseconds a message waits for room in a full queue before it is refused (wait, resource-constraint)" },
	{ .name = "notice", .type = KEY_STRING, .nullable = true,
	  .def = "This server keeps a journal of every message you send and receive.",
	  .offset = offsetof(struct config_journal, notice),
	  .doc = "message sent to every session at login while the journal is on; ~ = none" },
};

static const struct config_section config_journal_section = {
	.what = "journal",
	.keys = config_journal_keys,
	.n_keys = sizeof config_journal_keys / sizeof config_journal_keys[0],
	.size = sizeof(struct config_journal),
};

static const char *const config_push_includes[] = { "never", "opt-in", "always", NULL };

static const struct config_key config_push_keys[] = {
	{ .name = "enabled", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_push, enabled),
	  .doc = "accounts may enable push notifications (XEP-0357) to their apps' push services" },
	{ .name = "max_registrations", .type = KEY_INT, .def = "8", .min = 1, .max = 32,
	  .offset = offsetof(struct config_push, max_registrations),
	  .doc = "push registrations (app server JID and node) per account; one more: policy-violation" },
	{ .name = "min_interval", .type = KEY_INT, .def = "2", .min = 0, .max = 3600,
	  .offset = offsetof(struct config_push, min_interval),
	  .doc = "seconds between two notifications to one registration; messages in between are "
		 "folded into the next" },
	{ .name = "include_sender", .type = KEY_ENUM, .def = "opt-in", .values = config_push_includes,
	  .offset = offsetof(struct config_push, include_sender),
	  .doc = "last-message-sender in a notification: never, opt-in (only when the client asked "
		 "at enable), or always" },
	{ .name = "include_body", .type = KEY_ENUM, .def = "opt-in", .values = config_push_includes,
	  .offset = offsetof(struct config_push, include_body),
	  .doc = "last-message-body in a notification: never, opt-in (only when the client asked "
		 "at enable), or always" },
};

static const struct config_section config_push_section = {
	.what = "push",
	.keys = config_push_keys,
	.n_keys = sizeof config_push_keys / sizeof config_push_keys[0],
	.size = sizeof(struct config_push),
};

static const struct config_key config_host_keys[] = {
	{ .name = "domain", .type = KEY_DOMAIN, .required = true,
	  .offset = offsetof(struct config_host, domain),
	  .doc = "the domain served (JID domainpart); normalised (IDNA2008, lower case)" },
	{ .name = "tls_cert", .type = KEY_FILE,
	  .offset = offsetof(struct config_host, tls_cert),
	  .doc = "PEM certificate chain; with tls_key, or neither (self-signed in data_dir)" },
	{ .name = "tls_key", .type = KEY_FILE,
	  .offset = offsetof(struct config_host, tls_key),
	  .doc = "PEM private key of tls_cert" },
	{ .name = "auth", .type = KEY_ENUM, .def = "internal", .values = config_host_auths,
	  .offset = offsetof(struct config_host, auth),
	  .doc = "account source: internal (natter's store) or ldap (the directory in 'ldap')" },
	{ .name = "ldap", .type = KEY_MAP, .section = &config_ldap_section,
	  .offset = offsetof(struct config_host, ldap),
	  .doc = "the directory, when auth is ldap (docs/directory.md)" },
	{ .name = "kerberos", .type = KEY_MAP, .section = &config_kerberos_section,
	  .offset = offsetof(struct config_host, kerberos),
	  .doc = "SASL GSSAPI single sign-on (docs/kerberos.md)" },
	{ .name = "muc", .type = KEY_MAP, .section = &config_muc_section,
	  .offset = offsetof(struct config_host, muc),
	  .doc = "multi-user chat (docs/muc.md)" },
	{ .name = "mam", .type = KEY_MAP, .section = &config_mam_section,
	  .offset = offsetof(struct config_host, mam),
	  .doc = "message archives (docs/archive.md)" },
	{ .name = "pubsub", .type = KEY_MAP, .section = &config_pubsub_section,
	  .offset = offsetof(struct config_host, pubsub),
	  .doc = "the publish-subscribe service (docs/pubsub.md)" },
	{ .name = "journal", .type = KEY_MAP, .section = &config_journal_section,
	  .offset = offsetof(struct config_host, journal),
	  .doc = "the archive-all journal (docs/archive.md)" },
	{ .name = "push", .type = KEY_MAP, .section = &config_push_section,
	  .offset = offsetof(struct config_host, push),
	  .doc = "push notifications to mobile apps (docs/mobile.md)" },
};

static const struct config_section config_host_section = {
	.what = "a hosts entry",
	.keys = config_host_keys,
	.n_keys = sizeof config_host_keys / sizeof config_host_keys[0],
	.size = sizeof(struct config_host),
	.check = config_check_host,
};

static const struct config_key config_listener_keys[] = {
	{ .name = "type", .type = KEY_ENUM, .required = true,
	  .values = config_listener_types,
	  .offset = offsetof(struct config_listener, type),
	  .doc = "c2s (STARTTLS), c2s_tls (direct TLS, XEP-0368), s2s or s2s_tls (federation)" },
	{ .name = "address", .type = KEY_ADDRESS, .def = "127.0.0.1",
	  .offset = offsetof(struct config_listener, address),
	  .doc = "numeric IPv4 or IPv6 address to listen on" },
	{ .name = "port", .type = KEY_INT, .min = 1, .max = 65535,
	  .offset = offsetof(struct config_listener, port),
	  .doc = "TCP port; default 5222 c2s, 5223 c2s_tls, 5269 s2s, 5270 s2s_tls" },
};

static const struct config_section config_listener_section = {
	.what = "a listeners entry",
	.keys = config_listener_keys,
	.n_keys = sizeof config_listener_keys / sizeof config_listener_keys[0],
	.size = sizeof(struct config_listener),
	.check = config_check_listener,
};

static const struct config_key config_limits_keys[] = {
	/* RFC 6120 §13.12: a server must accept stanzas of at least 10000 bytes. */
	{ .name = "max_stanza_size", .type = KEY_SIZE, .def = "262144",
	  .min = 10000, .max = 16 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, max_stanza_size),
	  .doc = "largest stanza in bytes; a larger one closes the stream (policy-violation)" },
	{ .name = "max_depth", .type = KEY_INT, .def = "64", .min = 2, .max = 1024,
	  .offset = offsetof(struct config_limits, max_depth),
	  .doc = "deepest element nesting below the stream root" },
	{ .name = "max_attributes", .type = KEY_INT, .def = "64", .min = 4, .max = 1024,
	  .offset = offsetof(struct config_limits, max_attributes),
	  .doc = "most attributes on one element" },
	{ .name = "auth_timeout", .type = KEY_INT, .def = "30", .min = 1, .max = 3600,
	  .offset = offsetof(struct config_limits, auth_timeout),
	  .doc = "seconds from connect to authenticated" },
	{ .name = "idle_timeout", .type = KEY_INT, .def = "300", .min = 1, .max = 86400,
	  .offset = offsetof(struct config_limits, idle_timeout),
	  .doc = "seconds of silence before the server pings the client" },
	{ .name = "ping_timeout", .type = KEY_INT, .def = "30", .min = 1, .max = 3600,
	  .offset = offsetof(struct config_limits, ping_timeout),
	  .doc = "seconds the client has to answer that ping" },
	{ .name = "close_timeout", .type = KEY_INT, .def = "5", .min = 1, .max = 300,
	  .offset = offsetof(struct config_limits, close_timeout),
	  .doc = "seconds a closing connection has to take its last bytes before it is cut" },
	{ .name = "max_queued_output", .type = KEY_SIZE, .def = "2097152",
	  .min = 65536, .max = 1024 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, max_queued_output),
	  .doc = "bytes waiting for one peer that does not read before it is cut" },
	{ .name = "max_queued_total", .type = KEY_SIZE, .def = "268435456",
	  .min = 1048576, .max = 64LL * 1024 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, max_queued_total),
	  .doc = "bytes waiting for all peers together; past it, peers holding more than 64 KiB are cut" },
	{ .name = "max_roster_items", .type = KEY_INT, .def = "1000", .min = 1, .max = 1000000,
	  .offset = offsetof(struct config_limits, max_roster_items),
	  .doc = "most contacts in one roster" },
	{ .name = "max_offline_messages", .type = KEY_INT, .def = "500", .min = 0, .max = 1000000,
	  .offset = offsetof(struct config_limits, max_offline_messages),
	  .doc = "messages kept for one account while it is offline" },
	{ .name = "max_auth_failures", .type = KEY_INT, .def = "3", .min = 1, .max = 100,
	  .offset = offsetof(struct config_limits, max_auth_failures),
	  .doc = "failed logins on one stream; the last one closes it (policy-violation)" },
	{ .name = "auth_failures_per_address", .type = KEY_INT, .def = "10", .min = 1,
	  .max = 1000000, .offset = offsetof(struct config_limits, auth_failures_per_address),
	  .doc = "failed logins from one address, all streams together, per auth_failure_window" },
	{ .name = "auth_failures_per_account", .type = KEY_INT, .def = "20", .min = 1,
	  .max = 1000000, .offset = offsetof(struct config_limits, auth_failures_per_account),
	  .doc = "failed logins against one account, from anywhere, per auth_failure_window" },
	{ .name = "auth_failure_window", .type = KEY_INT, .def = "600", .min = 1, .max = 86400,
	  .offset = offsetof(struct config_limits, auth_failure_window),
	  .doc = "seconds in which the failed-login budgets refill completely" },
	{ .name = "max_unauthenticated_per_address", .type = KEY_INT, .def = "20", .min = 1,
	  .max = 1000000, .offset = offsetof(struct config_limits, max_unauthenticated_per_address),
	  .doc = "client connections one address may hold before logging in" },
	{ .name = "ipv6_prefix", .type = KEY_INT, .def = "56", .min = 32, .max = 128,
	  .offset = offsetof(struct config_limits, ipv6_prefix),
	  .doc = "IPv6 addresses sharing this many leading bits count as one address" },
	/* What one account may store (docs/configuration.md, "Per-account
	 * stores"): each reply built from a store stays well under the
	 * per-connection output cap, and no request walks more than that. */
	{ .name = "max_roster_name_size", .type = KEY_SIZE, .def = "1023", .min = 1, .max = 65535,
	  .offset = offsetof(struct config_limits, max_roster_name_size),
	  .doc = "longest roster item name in bytes; longer: not-acceptable" },
	{ .name = "max_roster_groups", .type = KEY_INT, .def = "32", .min = 1, .max = 1024,
	  .offset = offsetof(struct config_limits, max_roster_groups),
	  .doc = "most groups on one roster item; more: not-acceptable" },
	{ .name = "max_roster_size", .type = KEY_SIZE, .def = "524288",
	  .min = 16384, .max = 64 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, max_roster_size),
	  .doc = "bytes of one roster as a roster result; more: resource-constraint" },
	{ .name = "max_private_size", .type = KEY_SIZE, .def = "262144",
	  .min = 4096, .max = 64 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, max_private_size),
	  .doc = "bytes of private XML (XEP-0049) one account keeps" },
	{ .name = "max_private_items", .type = KEY_INT, .def = "64", .min = 1, .max = 100000,
	  .offset = offsetof(struct config_limits, max_private_items),
	  .doc = "namespaces of private XML one account keeps" },
	{ .name = "max_vcard_size", .type = KEY_SIZE, .def = "65536",
	  .min = 1024, .max = 16 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, max_vcard_size),
	  .doc = "bytes of one vCard (XEP-0054), serialised" },
	{ .name = "max_offline_size", .type = KEY_SIZE, .def = "16777216",
	  .min = 0, .max = 1024 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, max_offline_size),
	  .doc = "bytes of offline messages kept for one account" },
	{ .name = "max_blocklist_items", .type = KEY_INT, .def = "1000", .min = 1, .max = 1000000,
	  .offset = offsetof(struct config_limits, max_blocklist_items),
	  .doc = "most items in one block list (XEP-0191)" },
	{ .name = "max_blocklist_size", .type = KEY_SIZE, .def = "131072",
	  .min = 4096, .max = 64 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, max_blocklist_size),
	  .doc = "bytes of one block list as a <blocklist/> result" },
	/* Publish-subscribe: PEP nodes of accounts and pubsub services. */
	{ .name = "pubsub_max_items", .type = KEY_INT, .def = "256", .min = 1, .max = 100000,
	  .offset = offsetof(struct config_limits, pubsub_max_items),
	  .doc = "items one pubsub node keeps; a larger max_items: not-acceptable" },
	{ .name = "pubsub_max_item_size", .type = KEY_SIZE, .def = "131072",
	  .min = 1024, .max = 16 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, pubsub_max_item_size),
	  .doc = "bytes of one published item, serialised; larger: payload-too-big" },
	{ .name = "pubsub_max_nodes", .type = KEY_INT, .def = "128", .min = 1, .max = 100000,
	  .offset = offsetof(struct config_limits, pubsub_max_nodes),
	  .doc = "pubsub nodes per account (PEP) or per creator (service)" },
	{ .name = "pubsub_max_subscriptions", .type = KEY_INT, .def = "1000", .min = 1,
	  .max = 100000, .offset = offsetof(struct config_limits, pubsub_max_subscriptions),
	  .doc = "subscriptions and affiliations one pubsub node keeps" },
	{ .name = "pubsub_max_notifications", .type = KEY_INT, .def = "1000", .min = 1,
	  .max = 1000000, .offset = offsetof(struct config_limits, pubsub_max_notifications),
	  .doc = "notifications one publish sends at most (the rest are not sent)" },
	{ .name = "caps_cache_size", .type = KEY_INT, .def = "1024", .min = 16, .max = 1000000,
	  .offset = offsetof(struct config_limits, caps_cache_size),
	  .doc = "entity capabilities (XEP-0115) versions the server remembers" },
	/* Client state indication: what waits for a client that is inactive. */
	{ .name = "csi_max_held_stanzas", .type = KEY_INT, .def = "256", .min = 0, .max = 100000,
	  .offset = offsetof(struct config_limits, csi_max_held_stanzas),
	  .doc = "stanzas held for one inactive client (XEP-0352) before all are written; 0: none held" },
	{ .name = "csi_max_held_bytes", .type = KEY_SIZE, .def = "131072",
	  .min = 4096, .max = 64 * 1024 * 1024,
	  .offset = offsetof(struct config_limits, csi_max_held_bytes),
	  .doc = "bytes held for one inactive client before all are written" },
	{ .name = "fast_token_lifetime", .type = KEY_INT, .def = "1209600", .min = 0,
	  .max = 31536000, .offset = offsetof(struct config_limits, fast_token_lifetime),
	  .doc = "seconds a FAST token (XEP-0484) is valid; 0 turns FAST off" },
	{ .name = "max_fast_tokens", .type = KEY_INT, .def = "16", .min = 1, .max = 1000,
	  .offset = offsetof(struct config_limits, max_fast_tokens),
	  .doc = "devices per account holding FAST tokens; a new one evicts the least recently used" },
};

static const struct config_section config_limits_section = {
	.what = "limits",
	.keys = config_limits_keys,
	.n_keys = sizeof config_limits_keys / sizeof config_limits_keys[0],
	.size = sizeof(struct config_limits),
};

static const struct config_key config_remote_keys[] = {
	{ .name = "domain", .type = KEY_DOMAIN, .required = true,
	  .offset = offsetof(struct config_remote, domain),
	  .doc = "the remote domain" },
	{ .name = "auth", .type = KEY_ENUM, .def = "default", .values = config_s2s_auths,
	  .offset = offsetof(struct config_remote, auth),
	  .doc = "certificate (valid certificate required), dialback (certificate or dialback), "
		 "refuse, or default (s2s.dialback decides)" },
	{ .name = "require_tls", .type = KEY_BOOL,
	  .offset = offsetof(struct config_remote, require_tls),
	  .doc = "override s2s.require_tls for this domain" },
};

static int config_check_remote(struct config_parser *p, void *items, size_t idx,
			       const size_t *lines, size_t line)
{
	struct config_remote *r = (struct config_remote *)items + idx;
	(void)p, (void)line;
	if (!lines[2])
		r->require_tls = -1;
	return 0;
}

static const struct config_section config_remote_section = {
	.what = "a remotes entry",
	.keys = config_remote_keys,
	.n_keys = sizeof config_remote_keys / sizeof config_remote_keys[0],
	.size = sizeof(struct config_remote),
	.check = config_check_remote,
};

static const struct config_key config_s2s_keys[] = {
	{ .name = "enabled", .type = KEY_BOOL, .def = "false",
	  .offset = offsetof(struct config_s2s, enabled),
	  .doc = "federate: route stanzas to remote domains (and accept theirs on s2s listeners)" },
	{ .name = "require_tls", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_s2s, require_tls),
	  .doc = "TLS on every server-to-server link" },
	{ .name = "ca_file", .type = KEY_FILE,
	  .offset = offsetof(struct config_s2s, ca_file),
	  .doc = "CA certificates remote servers' certificates must chain to; default: the system's" },
	{ .name = "dialback", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_s2s, dialback),
	  .doc = "accept and use server dialback (XEP-0220) when a certificate does not verify" },
	{ .name = "secret", .type = KEY_STRING,
	  .offset = offsetof(struct config_s2s, secret),
	  .doc = "secret for dialback keys; default: random at each start (same on every node)" },
	{ .name = "connect_timeout", .type = KEY_INT, .def = "10", .min = 1, .max = 300,
	  .offset = offsetof(struct config_s2s, connect_timeout),
	  .doc = "seconds for an outgoing link to come up before its stanzas bounce" },
	{ .name = "idle_timeout", .type = KEY_INT, .def = "600", .min = 5, .max = 86400,
	  .offset = offsetof(struct config_s2s, idle_timeout),
	  .doc = "seconds an unused link stays open" },
	{ .name = "max_queue", .type = KEY_INT, .def = "1000", .min = 1, .max = 1000000,
	  .offset = offsetof(struct config_s2s, max_queue),
	  .doc = "stanzas waiting for one link to come up; more bounce (resource-constraint)" },
	{ .name = "allow", .type = KEY_STRING,
	  .offset = offsetof(struct config_s2s, allow),
	  .doc = "space-separated remote domains: federate only with these; default: any" },
	{ .name = "deny", .type = KEY_STRING,
	  .offset = offsetof(struct config_s2s, deny),
	  .doc = "space-separated remote domains never federated with" },
	{ .name = "remotes", .type = KEY_LIST, .section = &config_remote_section,
	  .offset = offsetof(struct config_s2s, remotes),
	  .count_offset = offsetof(struct config_s2s, n_remotes),
	  .doc = "per remote domain policy" },
};

static const struct config_section config_s2s_section = {
	.what = "s2s",
	.keys = config_s2s_keys,
	.n_keys = sizeof config_s2s_keys / sizeof config_s2s_keys[0],
	.size = sizeof(struct config_s2s),
};

static const struct config_key config_dns_keys[] = {
	{ .name = "resolver", .type = KEY_STRING,
	  .offset = offsetof(struct config_dns, resolver),
	  .doc = "recursive resolver ADDR[@PORT] for SRV and address lookups; default: "
		 "/etc/resolv.conf" },
	{ .name = "trust_anchor_file", .type = KEY_FILE,
	  .offset = offsetof(struct config_dns, trust_anchor_file),
	  .doc = "DNSSEC trust anchors (DS or DNSKEY records, e.g. /usr/share/dns/root.key): "
		 "validate answers and check s2s certificates against TLSA records (DANE)" },
};

static const struct config_section config_dns_section = {
	.what = "dns",
	.keys = config_dns_keys,
	.n_keys = sizeof config_dns_keys / sizeof config_dns_keys[0],
	.size = sizeof(struct config_dns),
};

static const struct config_key config_tls_keys[] = {
	{ .name = "session_tickets", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config_tls, session_tickets),
	  .doc = "let reconnecting clients resume their TLS session with a ticket "
		 "(no certificate signature)" },
	{ .name = "ticket_rotation", .type = KEY_INT, .def = "3600", .min = 1, .max = 302400,
	  .offset = offsetof(struct config_tls, ticket_rotation),
	  .doc = "seconds between two ticket keys; a ticket is accepted for one to two of "
		 "these periods; keys live in memory only" },
};

static const struct config_section config_tls_section = {
	.what = "tls",
	.keys = config_tls_keys,
	.n_keys = sizeof config_tls_keys / sizeof config_tls_keys[0],
	.size = sizeof(struct config_tls),
};

static const struct config_key config_sm_keys[] = {
	{ .name = "resume_timeout", .type = KEY_INT, .def = "300", .min = 0, .max = 86400,
	  .offset = offsetof(struct config_sm, resume_timeout),
	  .doc = "seconds a session whose connection dropped waits to be resumed; 0 = no resumption" },
	{ .name = "max_unacked", .type = KEY_INT, .def = "2000", .min = 10, .max = 1000000,
	  .offset = offsetof(struct config_sm, max_unacked),
	  .doc = "stanzas one session may hold unacknowledged (sent or queued while detached); "
		 "past it the session ends and its messages go to offline storage" },
	{ .name = "max_unacked_size", .type = KEY_SIZE, .def = "2097152",
	  .min = 65536, .max = 1024 * 1024 * 1024,
	  .offset = offsetof(struct config_sm, max_unacked_size),
	  .doc = "bytes of those stanzas" },
	{ .name = "request_every", .type = KEY_INT, .def = "5", .min = 1, .max = 10000,
	  .offset = offsetof(struct config_sm, request_every),
	  .doc = "stanzas sent before the server asks the client for an ack" },
};

static const struct config_section config_sm_section = {
	.what = "stream_management",
	.keys = config_sm_keys,
	.n_keys = sizeof config_sm_keys / sizeof config_sm_keys[0],
	.size = sizeof(struct config_sm),
};

static const struct config_key config_top_keys[] = {
	{ .name = "log_level", .type = KEY_ENUM, .def = "info", .values = config_log_levels,
	  .offset = offsetof(struct config, log_level),
	  .doc = "error, warn, info or debug" },
	{ .name = "data_dir", .type = KEY_STRING, .def = "./natter-data",
	  .offset = offsetof(struct config, data_dir),
	  .doc = "directory of the database and generated certificates; created 0700" },
	{ .name = "storage", .type = KEY_CHOICE, .def = "sqlite", .values = config_storage_drivers,
	  .offset = offsetof(struct config, storage),
	  .doc = "storage driver" },
	{ .name = "workers", .type = KEY_INT, .def = "0", .min = 0, .max = 1024,
	  .offset = offsetof(struct config, workers),
	  .doc = "event loops; 0 = one per core" },
	{ .name = "allow_plain", .type = KEY_BOOL, .def = "true",
	  .offset = offsetof(struct config, allow_plain),
	  .doc = "offer SASL PLAIN (only ever after TLS)" },
	{ .name = "scram_iterations", .type = KEY_INT, .def = "4096", .min = 4096, .max = 10000000,
	  .offset = offsetof(struct config, scram_iterations),
	  .doc = "PBKDF2 iterations for passwords set from now on" },
	{ .name = "hide_version", .type = KEY_BOOL, .def = "false",
	  .offset = offsetof(struct config, hide_version),
	  .doc = "answer software version queries (XEP-0092) with service-unavailable" },
	{ .name = "hide_os_version", .type = KEY_BOOL, .def = "false",
	  .offset = offsetof(struct config, hide_os_version),
	  .doc = "leave the operating system out of software version answers" },
	{ .name = "allow_registration", .type = KEY_BOOL, .def = "false",
	  .offset = offsetof(struct config, allow_registration),
	  .doc = "let anyone create an account in-band before login (XEP-0077)" },
	{ .name = "registration_interval", .type = KEY_INT, .def = "60", .min = 0, .max = 604800,
	  .offset = offsetof(struct config, registration_interval),
	  .doc = "seconds between two registrations from one address; 0 = no limit" },
	{ .name = "registrations_per_hour", .type = KEY_INT, .def = "30", .min = 0, .max = 1000000,
	  .offset = offsetof(struct config, registrations_per_hour),
	  .doc = "in-band registrations per hour from all addresses together; 0 = no limit" },
	{ .name = "hosts", .type = KEY_LIST, .section = &config_host_section,
	  .def = "[{domain: localhost}]",
	  .offset = offsetof(struct config, hosts),
	  .count_offset = offsetof(struct config, n_hosts),
	  .doc = "the domains served; at least one" },
	{ .name = "listeners", .type = KEY_LIST, .section = &config_listener_section,
	  .def = "[{type: c2s, address: 127.0.0.1, port: 5222},"
		 " {type: c2s_tls, address: 127.0.0.1, port: 5223}]",
	  .offset = offsetof(struct config, listeners),
	  .count_offset = offsetof(struct config, n_listeners),
	  .doc = "listeners (c2s, c2s_tls, s2s, s2s_tls); at least one" },
	{ .name = "limits", .type = KEY_MAP, .section = &config_limits_section,
	  .offset = offsetof(struct config, limits),
	  .doc = "limits on what one peer may do" },
	{ .name = "s2s", .type = KEY_MAP, .section = &config_s2s_section,
	  .offset = offsetof(struct config, s2s),
	  .doc = "federation with other XMPP servers (docs/federation.md)" },
	{ .name = "dns", .type = KEY_MAP, .section = &config_dns_section,
	  .offset = offsetof(struct config, dns),
	  .doc = "DNS lookups (docs/dns.md)" },
	{ .name = "tls", .type = KEY_MAP, .section = &config_tls_section,
	  .offset = offsetof(struct config, tls),
	  .doc = "TLS session resumption on the c2s listeners (docs/security.md)" },
	{ .name = "stream_management", .type = KEY_MAP, .section = &config_sm_section,
	  .offset = offsetof(struct config, sm),
	  .doc = "stream management and resumption (XEP-0198, docs/mobile.md)" },
};

/* config_parse_mapping() keeps one line number per key of a mapping. */
_Static_assert(sizeof config_top_keys / sizeof config_top_keys[0] <= CONFIG_MAX_KEYS,
	       "more top-level keys than CONFIG_MAX_KEYS");

static size_t config_key_index(const struct config_key *keys, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(keys[i].name, name) == 0)
			return i;
	return 0;
}

/* s2s listeners need federation on. */
static int config_check_top(struct config_parser *p, void *items, size_t idx,
			    const size_t *lines, size_t line)
{
	struct config *cfg = items;
	(void)idx;
	size_t n = sizeof config_top_keys / sizeof config_top_keys[0];
	size_t at = lines[config_key_index(config_top_keys, n, "listeners")];
	for (size_t i = 0; i < cfg->n_listeners && !cfg->s2s.enabled; i++)
		if (cfg->listeners[i].type == LISTENER_S2S || cfg->listeners[i].type == LISTENER_S2S_TLS)
			return config_fail(p, at ? at : line,
					   "an s2s listener needs federation on (s2s: {enabled: true})");
	return 0;
}

static const struct config_section config_top_section = {
	.what = "the top level",
	.keys = config_top_keys,
	.n_keys = sizeof config_top_keys / sizeof config_top_keys[0],
	.size = sizeof(struct config),
	.check = config_check_top,
};

static void *config_field(void *obj, size_t offset)
{
	return (char *)obj + offset;
}

/* Writes "path:line: message" into the caller's buffer; returns -1 so a
 * caller can `return config_fail(...)`. */
__attribute__((format(printf, 3, 4)))
static int config_fail(struct config_parser *p, size_t line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(p->err, p->errlen, "%s:%zu: %s", p->path, line, msg);
	return -1;
}

static size_t config_line(const yaml_event_t *ev)
{
	return ev->start_mark.line + 1;
}

/* Reads the next event. YAML errors and aliases become -1 with a message;
 * on success the caller owns *ev and deletes it. */
static int config_next(struct config_parser *p, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&p->yaml, ev)) {
		const yaml_parser_t *y = &p->yaml;
		yaml_mark_t mark = y->error == YAML_READER_ERROR ? y->mark : y->problem_mark;
		const char *problem = y->problem ? y->problem : "out of memory";
		if (!y->context)
			return config_fail(p, mark.line + 1, "YAML syntax error: %s", problem);
		if (y->context_mark.line == mark.line)
			return config_fail(p, mark.line + 1, "YAML syntax error: %s %s", problem,
					   y->context);
		/* e.g. an unclosed quote: say where the construct began */
		return config_fail(p, mark.line + 1, "YAML syntax error: %s %s (from line %zu)",
				   problem, y->context, y->context_mark.line + 1);
	}
	if (ev->type == YAML_ALIAS_EVENT) {
		size_t line = config_line(ev);
		yaml_event_delete(ev);
		return config_fail(p, line, "YAML aliases are not supported");
	}
	return 0;
}

static bool config_is_null(const char *v, bool plain)
{
	return v[0] == '\0' ||
	       (plain && (strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
			  strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0));
}

static bool config_word_in(const char *v, const char *const *words)
{
	for (; *words; words++)
		if (strcmp(v, *words) == 0)
			return true;
	return false;
}

static void config_join(const char *const *values, char *out, size_t cap)
{
	size_t n = 0;
	out[0] = '\0';
	for (const char *const *v = values; *v && n < cap; v++) {
		int m = snprintf(out + n, cap - n, "%s%s", v == values ? "" : ", ", *v);
		if (m < 0)
			break;
		n += (size_t)m;
	}
}

/* Describes what a key accepts, as in "'workers' must be an integer". */
static void config_type_error(const struct config_key *k, char *why, size_t whylen)
{
	char list[128];
	switch (k->type) {
	case KEY_INT:
	case KEY_SIZE:
		snprintf(why, whylen, "'%s' must be an integer", k->name);
		break;
	case KEY_BOOL:
		snprintf(why, whylen, "'%s' must be true or false", k->name);
		break;
	case KEY_CHOICE:
	case KEY_ENUM:
		config_join(k->values, list, sizeof list);
		snprintf(why, whylen, "'%s' must be one of: %s", k->name, list);
		break;
	case KEY_MAP:
		snprintf(why, whylen, "'%s' must be a mapping of keys", k->name);
		break;
	case KEY_LIST:
		snprintf(why, whylen, "'%s' must be a list", k->name);
		break;
	default:
		snprintf(why, whylen, "'%s' must be a string", k->name);
		break;
	}
}

static int config_set_string(void *field, const char *v)
{
	char *copy = strdup(v);
	if (!copy)
		return -1;
	char **slot = field;
	free(*slot);
	*slot = copy;
	return 0;
}

/* Parses one decimal integer, all of v. */
static bool config_parse_integer(const char *v, long long *out)
{
	const char *d = (v[0] == '-' || v[0] == '+') ? v + 1 : v;
	if (*d < '0' || *d > '9')
		return false;
	errno = 0;
	char *end;
	long long n = strtoll(v, &end, 10);
	if (errno || *end != '\0')
		return false;
	*out = n;
	return true;
}

/* Sets the scalar key k of obj from its text v; plain says whether it was
 * written unquoted (only plain scalars are numbers, booleans or null).
 * Returns 0, or -1 with the reason (without file:line) in why. */
static int config_set(const struct config_key *k, void *obj, const char *v, bool plain,
		      char *why, size_t whylen)
{
	static const char *const yes[] = { "true", "True", "TRUE", "yes", "Yes", "YES",
					   "on", "On", "ON", NULL };
	static const char *const no[] = { "false", "False", "FALSE", "no", "No", "NO",
					  "off", "Off", "OFF", NULL };
	void *field = config_field(obj, k->offset);
	char dom[JID_PART_MAX + 1];
	char list[128];
	long long n;

	switch (k->type) {
	case KEY_INT:
	case KEY_SIZE:
		if (!plain || !config_parse_integer(v, &n)) {
			config_type_error(k, why, whylen);
			return -1;
		}
		if (n < k->min || n > k->max) {
			snprintf(why, whylen, "'%s' must be between %lld and %lld", k->name,
				 k->min, k->max);
			return -1;
		}
		if (k->type == KEY_INT)
			*(int *)field = (int)n;
		else
			*(size_t *)field = (size_t)n;
		return 0;
	case KEY_BOOL:
		if (plain && config_word_in(v, yes)) {
			*(int *)field = 1;
			return 0;
		}
		if (plain && config_word_in(v, no)) {
			*(int *)field = 0;
			return 0;
		}
		config_type_error(k, why, whylen);
		return -1;
	case KEY_ENUM:
	case KEY_CHOICE:
		for (int i = 0; k->values[i]; i++) {
			if (strcmp(v, k->values[i]) != 0)
				continue;
			if (k->type == KEY_ENUM) {
				memcpy(field, &i, sizeof i);
				return 0;
			}
			goto string;
		}
		config_join(k->values, list, sizeof list);
		snprintf(why, whylen, "unknown %s '%s' (allowed: %s)", k->name, v, list);
		return -1;
	default:
		break;
	}

	if (config_is_null(v, plain) && k->nullable) {
		char **slot = field;
		free(*slot);
		*slot = NULL;
		return 0;
	}
	if (config_is_null(v, plain)) {
		snprintf(why, whylen, "'%s' must not be empty", k->name);
		return -1;
	}
	if (k->type == KEY_FILE) {
		int fd = open(v, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			snprintf(why, whylen, "cannot read %s '%s': %s", k->name, v, strerror(errno));
			return -1;
		}
		close(fd);
	} else if (k->type == KEY_ADDRESS) {
		unsigned char addr[sizeof(struct in6_addr)];
		if (inet_pton(AF_INET, v, addr) != 1 && inet_pton(AF_INET6, v, addr) != 1) {
			snprintf(why, whylen, "'%s' must be a numeric IPv4 or IPv6 address, not '%s'",
				 k->name, v);
			return -1;
		}
	} else if (k->type == KEY_DOMAIN) {
		if (jid_prep_domain(v, strlen(v), dom, sizeof dom) < 0) {
			snprintf(why, whylen, "'%s' is not a valid domain name", v);
			return -1;
		}
		v = dom;
	}
string:
	if (config_set_string(field, v) < 0) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	return 0;
}

static void config_apply_defaults(const struct config_section *s, void *obj);
static int config_parse_value(struct config_parser *p, const struct config_key *k, void *obj);

/* Reads the rest of a mapping whose MAPPING_START (on line) was consumed,
 * into item idx of items (items itself outside lists). */
static int config_parse_mapping(struct config_parser *p, const struct config_section *s,
				void *items, size_t idx, size_t line)
{
	size_t lines[CONFIG_MAX_KEYS] = { 0 };
	void *obj = (char *)items + idx * s->size;

	for (;;) {
		yaml_event_t ev;
		if (config_next(p, &ev) < 0)
			return -1;
		size_t kline = config_line(&ev);
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			yaml_event_delete(&ev);
			return config_fail(p, kline, "keys must be plain names");
		}
		const char *name = (const char *)ev.data.scalar.value;
		size_t i;
		for (i = 0; i < s->n_keys; i++)
			if (strcmp(name, s->keys[i].name) == 0)
				break;
		if (i == s->n_keys) {
			if (s == &config_top_section)
				config_fail(p, kline, "unknown key '%s'", name);
			else
				config_fail(p, kline, "unknown key '%s' in %s", name, s->what);
			yaml_event_delete(&ev);
			return -1;
		}
		yaml_event_delete(&ev);
		if (lines[i])
			return config_fail(p, kline, "duplicate key '%s' (first on line %zu)",
					   s->keys[i].name, lines[i]);
		lines[i] = kline;
		if (config_parse_value(p, &s->keys[i], obj) < 0)
			return -1;
	}

	for (size_t i = 0; i < s->n_keys; i++)
		if (s->keys[i].required && !lines[i])
			return config_fail(p, line, "%s needs a '%s'", s->what, s->keys[i].name);
	return s->check ? s->check(p, items, idx, lines, line) : 0;
}

static void config_free_section(const struct config_section *s, void *obj);

static void config_free_list(const struct config_key *k, void *obj)
{
	char *items;
	size_t *count = config_field(obj, k->count_offset);
	memcpy(&items, config_field(obj, k->offset), sizeof items);
	for (size_t i = 0; items && i < *count; i++)
		config_free_section(k->section, items + i * k->section->size);
	free(items);
	items = NULL;
	memcpy(config_field(obj, k->offset), &items, sizeof items);
	*count = 0;
}

/* Reads a list of mappings whose SEQUENCE_START (on line) was consumed. It
 * replaces the list held so far (the default), it does not extend it. */
static int config_parse_list(struct config_parser *p, const struct config_key *k, void *obj,
			     size_t line)
{
	const struct config_section *s = k->section;
	size_t *count = config_field(obj, k->count_offset);

	config_free_list(k, obj);
	for (;;) {
		yaml_event_t ev;
		if (config_next(p, &ev) < 0)
			return -1;
		size_t iline = config_line(&ev);
		yaml_event_type_t type = ev.type;
		yaml_event_delete(&ev);
		if (type == YAML_SEQUENCE_END_EVENT)
			break;
		if (type != YAML_MAPPING_START_EVENT)
			return config_fail(p, iline, "each entry of '%s' must be a mapping of keys",
					   k->name);

		char *items;
		memcpy(&items, config_field(obj, k->offset), sizeof items);
		char *grown = realloc(items, (*count + 1) * s->size);
		if (!grown)
			return config_fail(p, iline, "out of memory");
		memcpy(config_field(obj, k->offset), &grown, sizeof grown);
		memset(grown + *count * s->size, 0, s->size);
		config_apply_defaults(s, grown + *count * s->size);
		(*count)++;
		if (config_parse_mapping(p, s, grown, *count - 1, iline) < 0)
			return -1;
	}
	if (*count == 0)
		return config_fail(p, line, "'%s' must list at least one entry", k->name);
	return 0;
}

/* Reads the value of key k (its name was just consumed) into obj. */
static int config_parse_value(struct config_parser *p, const struct config_key *k, void *obj)
{
	yaml_event_t ev;
	char why[512];

	if (config_next(p, &ev) < 0)
		return -1;
	size_t line = config_line(&ev);
	yaml_event_type_t type = ev.type;

	if (k->type == KEY_MAP && type == YAML_MAPPING_START_EVENT) {
		yaml_event_delete(&ev);
		return config_parse_mapping(p, k->section, config_field(obj, k->offset), 0, line);
	}
	if (k->type == KEY_LIST && type == YAML_SEQUENCE_START_EVENT) {
		yaml_event_delete(&ev);
		return config_parse_list(p, k, obj, line);
	}
	if (k->type == KEY_MAP || k->type == KEY_LIST || type != YAML_SCALAR_EVENT) {
		yaml_event_delete(&ev);
		config_type_error(k, why, sizeof why);
		return config_fail(p, line, "%s", why);
	}
	int rc = config_set(k, obj, (const char *)ev.data.scalar.value,
			    ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE, why, sizeof why);
	yaml_event_delete(&ev);
	if (rc < 0)
		return config_fail(p, line, "%s", why);
	return 0;
}

/* Reads the whole file once for YAML syntax alone, so that a syntax error
 * is reported where it is, not as a type error of a value read before it
 * (e.g. "workers: 1" followed by a badly indented line). */
static int config_check_syntax(struct config_parser *p)
{
	for (;;) {
		yaml_event_t ev;
		if (config_next(p, &ev) < 0)
			return -1;
		yaml_event_type_t type = ev.type;
		yaml_event_delete(&ev);
		if (type == YAML_STREAM_END_EVENT)
			return 0;
	}
}

/* Reads one document: a mapping of the top-level keys, or nothing. */
static int config_parse_stream(struct config_parser *p, struct config *cfg)
{
	yaml_event_t ev;
	yaml_event_type_t type;
	size_t line;

	for (int step = 0;; step++) {
		if (config_next(p, &ev) < 0)
			return -1;
		type = ev.type;
		line = config_line(&ev);
		bool null_doc = type == YAML_SCALAR_EVENT &&
				config_is_null((const char *)ev.data.scalar.value,
					       ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE);
		yaml_event_delete(&ev);
		switch (step) {
		case 0: /* STREAM_START is always first */
			break;
		case 1:
			if (type == YAML_STREAM_END_EVENT)
				return 0; /* no document at all: all defaults */
			break;
		case 2:
			if (type == YAML_MAPPING_START_EVENT) {
				if (config_parse_mapping(p, &config_top_section, cfg, 0, line) < 0)
					return -1;
			} else if (!null_doc) {
				return config_fail(p, line, "the file must be a mapping of keys");
			}
			break;
		case 3: /* DOCUMENT_END */
			break;
		default:
			if (type == YAML_STREAM_END_EVENT)
				return 0;
			return config_fail(p, line, "only one YAML document is allowed");
		}
	}
}

/* Sets every key of s that has a default, in obj (zeroed by the caller).
 * A default that does not parse is a bug in the tables above. */
static void config_apply_defaults(const struct config_section *s, void *obj)
{
	for (size_t i = 0; i < s->n_keys; i++) {
		const struct config_key *k = &s->keys[i];
		char why[512];
		if (k->type == KEY_MAP) {
			config_apply_defaults(k->section, config_field(obj, k->offset));
			continue;
		}
		if (!k->def)
			continue;
		if (k->type != KEY_LIST) {
			if (config_set(k, obj, k->def, true, why, sizeof why) < 0)
				goto fatal;
			continue;
		}
		/* A list default is a YAML flow sequence read like the file. */
		struct config_parser p = { .path = "<defaults>", .err = why, .errlen = sizeof why };
		yaml_event_t ev;
		if (!yaml_parser_initialize(&p.yaml))
			goto fatal;
		yaml_parser_set_input_string(&p.yaml, (const unsigned char *)k->def, strlen(k->def));
		int rc = 0;
		for (int j = 0; j < 2 && rc == 0; j++) { /* STREAM_START, DOCUMENT_START */
			rc = config_next(&p, &ev);
			if (rc == 0)
				yaml_event_delete(&ev);
		}
		if (rc == 0)
			rc = config_parse_value(&p, k, obj);
		yaml_parser_delete(&p.yaml);
		if (rc < 0)
			goto fatal;
		continue;
fatal:
		fprintf(stderr, "natter: bad built-in default for '%s': %s\n", k->name, why);
		abort();
	}
}

static void config_free_section(const struct config_section *s, void *obj)
{
	for (size_t i = 0; i < s->n_keys; i++) {
		const struct config_key *k = &s->keys[i];
		char **str;
		switch (k->type) {
		case KEY_STRING:
		case KEY_FILE:
		case KEY_DOMAIN:
		case KEY_ADDRESS:
		case KEY_CHOICE:
			str = config_field(obj, k->offset);
			free(*str);
			*str = NULL;
			break;
		case KEY_MAP:
			config_free_section(k->section, config_field(obj, k->offset));
			break;
		case KEY_LIST:
			config_free_list(k, obj);
			break;
		default:
			break;
		}
	}
}

/* tls_cert and tls_key come together; a domain is served once. */
static int config_check_host(struct config_parser *p, void *items, size_t idx,
			     const size_t *lines, size_t line)
{
	struct config_host *hosts = items, *h = &hosts[idx];
	(void)line;
	/* lines[] follows config_host_keys: domain, tls_cert, tls_key */
	if (h->tls_cert && !h->tls_key)
		return config_fail(p, lines[1], "tls_cert given without tls_key");
	if (h->tls_key && !h->tls_cert)
		return config_fail(p, lines[2], "tls_key given without tls_cert");
	for (size_t i = 0; i < idx; i++)
		if (strcmp(hosts[i].domain, h->domain) == 0)
			return config_fail(p, lines[0], "duplicate domain '%s'", h->domain);
	/* lines[3..5]: auth, ldap, kerberos */
	if (h->auth == HOST_AUTH_LDAP && (h->ldap.uri == NULL || h->ldap.base_dn == NULL))
		return config_fail(p, lines[4] ? lines[4] : lines[3] ? lines[3] : line,
				   "auth: ldap needs ldap with a 'uri' and a 'base_dn'");
	if (h->auth != HOST_AUTH_LDAP && lines[4])
		return config_fail(p, lines[4], "'ldap' is given but 'auth' is not ldap");
	/* lines[6]: muc. A service domain is nobody else's. */
	for (size_t i = 0; i <= idx && h->muc.domain; i++) {
		if (strcmp(hosts[i].domain, h->muc.domain) == 0)
			return config_fail(p, lines[6], "muc domain '%s' is a host's domain",
					   h->muc.domain);
		if (i < idx && hosts[i].muc.domain && strcmp(hosts[i].muc.domain, h->muc.domain) == 0)
			return config_fail(p, lines[6], "muc domain '%s' is another host's",
					   h->muc.domain);
	}
	/* lines[7]: pubsub, whose domain is nobody else's either. */
	for (size_t i = 0; i <= idx && h->pubsub.domain; i++) {
		if (strcmp(hosts[i].domain, h->pubsub.domain) == 0 ||
		    (hosts[i].muc.domain && strcmp(hosts[i].muc.domain, h->pubsub.domain) == 0))
			return config_fail(p, lines[7], "pubsub domain '%s' is already in use",
					   h->pubsub.domain);
		if (i < idx && hosts[i].pubsub.domain &&
		    strcmp(hosts[i].pubsub.domain, h->pubsub.domain) == 0)
			return config_fail(p, lines[7], "pubsub domain '%s' is another host's",
					   h->pubsub.domain);
	}
	/* GSS-API reads one keytab per process (KRB5_KTNAME). */
	for (size_t i = 0; i < idx && h->kerberos.keytab; i++)
		if (hosts[i].kerberos.keytab && strcmp(hosts[i].kerberos.keytab, h->kerberos.keytab))
			return config_fail(p, lines[5],
					   "every host must use the same kerberos keytab ('%s' above)",
					   hosts[i].kerberos.keytab);
	return 0;
}

/* lines[] follows config_ldap_keys. */
static int config_check_ldap(struct config_parser *p, void *items, size_t idx,
			     const size_t *lines, size_t line)
{
	struct config_ldap *l = (struct config_ldap *)items + idx;
	if (l->uri != NULL) {
		char *copy = strdup(l->uri);
		if (copy == NULL)
			return config_fail(p, lines[0], "out of memory");
		for (char *save, *u = strtok_r(copy, " \t,", &save); u; u = strtok_r(NULL, " \t,", &save)) {
			if (strncmp(u, "ldap://", 7) != 0 && strncmp(u, "ldaps://", 8) != 0 &&
			    strncmp(u, "ldapi://", 8) != 0) {
				config_fail(p, lines[0], "'%s' is not an ldap://, ldaps:// or ldapi:// URI", u);
				free(copy);
				return -1;
			}
		}
		free(copy);
	}
	if (l->bind_password && l->bind_password_file)
		return config_fail(p, lines[6], "give bind_password or bind_password_file, not both");
	if ((l->bind_password || l->bind_password_file) && !l->bind_dn)
		return config_fail(p, lines[5] ? lines[5] : lines[6], "a bind password needs a bind_dn");
	if (strstr(l->user_filter, "%u") == NULL)
		return config_fail(p, lines[8] ? lines[8] : line, "user_filter must contain %%u");
	if (l->user_filter[0] != '(' || (l->locked_filter && l->locked_filter[0] != '('))
		return config_fail(p, lines[l->user_filter[0] != '(' ? 8 : 9],
				   "an LDAP filter is written in parentheses");
	return 0;
}

static bool config_same_address(const char *a, const char *b)
{
	unsigned char x[sizeof(struct in6_addr)] = { 0 }, y[sizeof(struct in6_addr)] = { 0 };
	int fx = strchr(a, ':') ? AF_INET6 : AF_INET;
	int fy = strchr(b, ':') ? AF_INET6 : AF_INET;
	return fx == fy && inet_pton(fx, a, x) == 1 && inet_pton(fy, b, y) == 1 &&
	       memcmp(x, y, sizeof x) == 0;
}

/* The port defaults by type; one address:port is bound once. */
static int config_check_listener(struct config_parser *p, void *items, size_t idx,
				 const size_t *lines, size_t line)
{
	struct config_listener *ls = items, *l = &ls[idx];
	static const int default_ports[] = { 5222, 5223, 5269, 5270 };
	if (l->port == 0)
		l->port = default_ports[l->type];
	/* lines[] follows config_listener_keys: type, address, port */
	size_t at = lines[2] ? lines[2] : line;
	for (size_t i = 0; i < idx; i++)
		if (ls[i].port == l->port && config_same_address(ls[i].address, l->address))
			return config_fail(p, at, "duplicate listener %s port %d", l->address,
					   l->port);
	return 0;
}

/* Called once at start by natterd and natterctl, and by config_load()
 * before it reads the file. Every default comes from the tables above. */
void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	config_apply_defaults(&config_top_section, cfg);
}

/* Called at start and on SIGHUP (into a fresh struct, swapped in only on
 * success). The caller owns *cfg afterwards and frees it with config_free();
 * on -1 it is already freed and err says "file:line: message". */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
	struct config_parser p = { .path = path, .err = err, .errlen = errlen };
	int rc = -1;

	config_defaults(cfg);
	cfg->path = strdup(path);
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		goto out;
	}
	if (!cfg->path || !yaml_parser_initialize(&p.yaml)) {
		snprintf(err, errlen, "%s: out of memory", path);
		fclose(f);
		goto out;
	}
	yaml_parser_set_input_file(&p.yaml, f);
	rc = config_check_syntax(&p);
	yaml_parser_delete(&p.yaml);
	if (rc == 0) {
		rewind(f);
		if (!yaml_parser_initialize(&p.yaml)) {
			snprintf(err, errlen, "%s: out of memory", path);
			rc = -1;
		} else {
			yaml_parser_set_input_file(&p.yaml, f);
			rc = config_parse_stream(&p, cfg);
			yaml_parser_delete(&p.yaml);
		}
	}
	fclose(f);
out:
	if (rc < 0)
		config_free(cfg);
	return rc;
}

/* Frees every string and list of *cfg, walking the same tables, and zeroes
 * it, so freeing twice is harmless. */
void config_free(struct config *cfg)
{
	config_free_section(&config_top_section, cfg);
	free(cfg->path);
	memset(cfg, 0, sizeof *cfg);
}

/* domain must already be normalised (jid_prep_domain), as the stored
 * domains are. The result lives as long as *cfg. */
const struct config_host *config_find_host(const struct config *cfg, const char *domain)
{
	for (size_t i = 0; i < cfg->n_hosts; i++)
		if (strcmp(cfg->hosts[i].domain, domain) == 0)
			return &cfg->hosts[i];
	return NULL;
}
