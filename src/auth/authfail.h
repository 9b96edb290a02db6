/* Slowing down password guessing: failed logins are counted per peer
 * address (shared by all loops), and each failure's answer is delayed
 * longer the more that address has failed recently. */
#ifndef NATTER_AUTHFAIL_H
#define NATTER_AUTHFAIL_H

struct authfail;

struct authfail *authfail_new(void);
void authfail_free(struct authfail *af);
/* Records a failure from addr; returns the delay in ms before answering
 * (250 ms doubling per recent failure, at most 8 s). */
unsigned authfail_record(struct authfail *af, const char *addr);
/* A successful login from addr clears its count. */
void authfail_success(struct authfail *af, const char *addr);

#endif
