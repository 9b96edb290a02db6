/* natterd: the XMPP server. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "core/server.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: natterd [-c CONFIG] [--check-config]\n"
		   "  -c, --config FILE   YAML configuration (default: built-in embedded default:\n"
		   "                      domain localhost on 127.0.0.1:5222/5223, data in ./natter-data)\n"
		   "      --check-config  validate the configuration and exit\n"
		   "  -h, --help          this text\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	int check_only = 0, opt;
	while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'k': check_only = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	struct config cfg;
	char err[1024];
	if (path != NULL) {
		if (config_load(&cfg, path, err, sizeof err) != 0) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
	} else {
		config_defaults(&cfg);
	}
	if (check_only) {
		printf("%s: configuration ok\n", path ? path : "(built-in defaults)");
		config_free(&cfg);
		return 0;
	}
	log_set_level(cfg.log_level);
	if (path == NULL)
		log_info("no -c given: running the embedded default (domain localhost, 127.0.0.1 only)");
	for (size_t i = 0; i < cfg.n_hosts; i++)
		log_info("host %s: add a user with: natterctl%s%s user add alice@%s", cfg.hosts[i].domain,
			 path ? " -c " : "", path ? path : "", cfg.hosts[i].domain);
	int rc = server_run(&cfg);
	config_free(&cfg);
	return rc;
}
