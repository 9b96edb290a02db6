/* Slowing down password guessing, shared by all loops:
 *
 * - every address (netaddr.h: an IPv6 prefix counts as one) and every
 *   account has a budget of failed logins (limits.auth_failures_per_address,
 *   limits.auth_failures_per_account) that refills over
 *   limits.auth_failure_window; once spent, logins from that address or to
 *   that account are refused without checking the password, on every
 *   stream;
 * - each failure's answer is delayed, longer the more the address or the
 *   account has failed recently;
 * - an address may hold limits.max_unauthenticated_per_address streams
 *   that have not logged in yet.
 * A successful login restores the budget of the account that logged in,
 * never the address's: logging in to one's own account between guesses
 * buys nothing. */
#ifndef NATTER_AUTHFAIL_H
#define NATTER_AUTHFAIL_H

#include <stdbool.h>

struct authfail;
struct config_limits;

/* How long an attempt refused unchecked (budget spent) waits for its
 * answer, so that a refused stream cannot spin. */
#define AUTHFAIL_REFUSED_DELAY_MS 1000

struct authfail *authfail_new(void);
void authfail_free(struct authfail *af);

/* True when the address addr (netaddr_key_str() form) or the account
 * ("local@domain", or NULL while not known) has spent its budget: the
 * attempt must be refused without checking it. */
bool authfail_blocked(struct authfail *af, const struct config_limits *lim, const char *addr,
		      const char *account);

/* Records a failed login from addr against account (NULL when the
 * mechanism failed before naming one) and sets *delay_ms to the wait
 * before answering: 250 ms doubling with the recent failures of the
 * address or the account, whichever has more, at most 8 s. Returns -1,
 * recording nothing, when the budget was spent meanwhile (by a stream on
 * another loop): the attempt is then refused as authfail_blocked() would
 * have. Check and record are one step, so parallel streams never get
 * more than the budget. */
int authfail_record(struct authfail *af, const struct config_limits *lim, const char *addr,
		    const char *account, unsigned *delay_ms);

/* A successful login to account clears that account's failures only. */
void authfail_success(struct authfail *af, const char *account);

/* Counts one more stream from addr that has not logged in. Returns 0, or
 * -1 (nothing counted) when addr already holds max of them. Every 0 is
 * matched by one authfail_stream_done() with the same addr. */
int authfail_stream_open(struct authfail *af, const char *addr, int max);
void authfail_stream_done(struct authfail *af, const char *addr);

#endif
