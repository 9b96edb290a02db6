/* natter-load: a load generator for XMPP servers (natter, Prosody,
 * ejabberd), for issue 4's side-by-side benchmark. See README.md. */
#include <stdio.h>
#include <string.h>

#include "opts.h"
#include "scenario.h"

int main(int argc, char **argv)
{
	struct opts o;
	int rc = opts_parse(&o, argc, argv);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	if (strcmp(o.scenario, "idle") == 0)
		return idle_run(&o);
	if (strcmp(o.scenario, "login") == 0)
		return login_run(&o);
	if (strcmp(o.scenario, "chat") == 0)
		return chat_run(&o);
	if (strcmp(o.scenario, "muc") == 0)
		return muc_run(&o);
	if (strcmp(o.scenario, "presence") == 0)
		return presence_run(&o);
	if (strcmp(o.scenario, "mam") == 0)
		return mam_run(&o);
	if (strcmp(o.scenario, "pep") == 0)
		return pep_run(&o);
	if (strcmp(o.scenario, "reconnect") == 0)
		return reconnect_run(&o);
	fprintf(stderr, "natter-load: unknown scenario '%s' (idle, login, chat, muc, presence, mam, pep, reconnect)\n", o.scenario);
	return 2;
}
