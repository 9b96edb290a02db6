/* The server configuration: one YAML file, declared in one table in
 * config.c, validated completely before anything starts. */
#ifndef NATTER_CONFIG_H
#define NATTER_CONFIG_H

#include <stddef.h>

#include "core/log.h"

enum listener_type {
	LISTENER_C2S,     /* STARTTLS (RFC 6120), port 5222 */
	LISTENER_C2S_TLS  /* direct TLS (XEP-0368), port 5223, ALPN xmpp-client */
};

struct config_host {
	char *domain;   /* normalised domain name (IDNA2008 / RFC 7622 domainpart) */
	char *tls_cert; /* PEM certificate chain; NULL = self-signed in data_dir */
	char *tls_key;  /* PEM private key; NULL = self-signed in data_dir */
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
	int max_roster_items;        /* contacts per roster */
	int max_offline_messages;    /* offline store quota per account */
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
				    * address (IPv6: one /64); 0 = no limit */
	struct config_host *hosts;
	size_t n_hosts;
	struct config_listener *listeners;
	size_t n_listeners;
	struct config_limits limits;
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
