/* One status type for every internal interface (STYLE.md habit 4). */
#ifndef NATTER_STATUS_H
#define NATTER_STATUS_H

enum status {
	OK = 0,        /* done, go on */
	ERROR = -1,    /* failed; the caller maps it to a protocol error */
	AGAIN = -2,    /* not finished; the callee will call back */
	DECLINED = -3, /* not mine; try the next handler */
	DONE = -4      /* finished and consumed; stop processing */
};

#endif
