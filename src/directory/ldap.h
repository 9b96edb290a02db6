/* One directory connection pair and the LDAP operations natter needs, on
 * OpenLDAP's libldap. Blocking calls, bounded by the configured timeout:
 * used only by directory threads (directory.c), never by an event loop.
 *
 * A struct ldap_conn has two LDAP handles: "search", bound as the service
 * account (or anonymous), and "bind", used only to check user passwords
 * (its identity changes with every check, so it never searches). Both are
 * opened lazily and dropped after any network error; the next call opens
 * them again. */
#ifndef NATTER_LDAP_H
#define NATTER_LDAP_H

#include <stddef.h>

#include "core/buf.h"
#include "core/config.h"
#include "directory/directory.h"

struct ldap_conn;

/* One user's entry, as far as natter reads it. */
struct ldap_user {
	char dn[1024];
	char local[JID_PART_MAX + 1]; /* username_attribute, normalised by jid_prep_local */
	char name[256];               /* name_attribute; "" if absent */
	char photo_hash[41];          /* SHA-1 hex of the vcard photo attribute; "" none */
	int locked;                   /* matches locked_filter */
};

/* A group entry: its cn, and its members as DNs (member, uniqueMember)
 * and as usernames (memberUid). Strings are heap-allocated; free with
 * ldap_group_free. name is NULL if the entry has no cn; memberUid values
 * are as stored (not normalised); uniqueMember's optional #'...'B uid is
 * stripped. */
struct ldap_group {
	char *name;
	char **member_dns;
	size_t n_member_dns;
	char **member_uids;
	size_t n_member_uids;
	int is_group;  /* the entry is a group at all (objectClass) */
};

/* Creates the connection pair for cfg (nothing is connected yet); cfg must
 * outlive it. bind_password is the service password (from bind_password or
 * the file), or NULL. */
struct ldap_conn *ldap_conn_new(const struct config_ldap *cfg, const char *bind_password);
void ldap_conn_free(struct ldap_conn *c);

/* Drops both handles (a prober's fresh start: an open handle says nothing
 * about whether the directory still answers). */
void ldap_conn_reset(struct ldap_conn *c);

/* Connects (URIs in order, StartTLS if configured, CA and verification
 * from cfg) and binds the service account, if not connected yet.
 * DIR_OK, DIR_UNAVAILABLE (with the reason in err) or DIR_ERROR. */
enum dir_status ldap_conn_open(struct ldap_conn *c, char *err, size_t errlen);

/* Finds the user by user_filter (escaped). DIR_OK fills out (including
 * locked, by a base search with locked_filter when configured, and the
 * photo hash when with_photo), DIR_UNKNOWN for no entry or more than one. */
enum dir_status ldap_find_user(struct ldap_conn *c, const char *user, int with_photo,
			       struct ldap_user *out, char *err, size_t errlen);

/* Simple bind as dn with password on the "bind" handle: DIR_OK, DIR_DENIED,
 * DIR_UNAVAILABLE or DIR_ERROR. password must not be empty (the caller
 * refuses that). */
enum dir_status ldap_check_password(struct ldap_conn *c, const char *dn, const char *password,
				    char *err, size_t errlen);

/* Calls fn for every entry matching user_filter with %u as "*" under
 * base_dn, with paged results (RFC 2696) so large directories (Active
 * Directory's 1000-entry limit) are read whole. local is normalised; entries
 * whose username is not a valid localpart are skipped (logged once).
 * Returns DIR_OK or the failure. */
enum dir_status ldap_list_users(struct ldap_conn *c,
				void (*fn)(void *arg, const char *dn, const char *local,
					   const char *name),
				void *arg, char *err, size_t errlen);

/* Reads the entry at dn (base scope). DIR_OK with out filled (is_group 0
 * if the entry exists but is no group), DIR_UNKNOWN if there is no entry. */
enum dir_status ldap_read_group(struct ldap_conn *c, const char *dn, struct ldap_group *out,
				char *err, size_t errlen);
void ldap_group_free(struct ldap_group *g);

/* Builds the vcard-temp <vCard/> of user from the vcard map (escaped XML;
 * the photo as BINVAL base64 with TYPE image/jpeg). DIR_OK, DIR_UNKNOWN or
 * the failure. */
enum dir_status ldap_read_vcard(struct ldap_conn *c, const char *user, struct buf *out,
				char *err, size_t errlen);

/* For an attribute name of a ranged answer (Active Directory's
 * "member;range=0-1499"): 1 with *next the first value of the next range,
 * 0 for the last range ("member;range=1500-*"), -1 for any other name. */
int ldap_range_next(const char *attr, long *next);

/* Normalises a DN for comparison (lower case, no spaces around , and =),
 * as libldap's ldap_str2dn/ldap_dn2str give it. Returns 0 or -1. */
int ldap_dn_normalise(const char *dn, char *out, size_t cap);

#endif
