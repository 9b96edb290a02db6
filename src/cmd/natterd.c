/* natterd: the XMPP server. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "core/server.h"

#ifdef NATTER_JEMALLOC
/* Read by jemalloc at its first allocation; MALLOC_CONF in the environment
 * still overrides it. A background thread gives pages nobody used for 2 s
 * back to the system (MADV_DONTNEED at once, no "muzzy" MADV_FREE stage,
 * which would leave them in RSS until the kernel is short of memory), so
 * an idle server shrinks without natterd asking. docs/decisions/0011. */
const char *malloc_conf = "background_thread:true,dirty_decay_ms:2000,muzzy_decay_ms:0";
#endif

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
	/* The next steps for a new operator (server_run logs them once
	 * ready) name natterctl with the paths that work from here. */
	char ctl[2048];
	const char *slash = strrchr(argv[0], '/');
	snprintf(ctl, sizeof ctl, "%.*snatterctl%s%s", slash ? (int)(slash - argv[0] + 1) : 0,
		 argv[0], path ? " -c " : "", path ? path : "");
	int rc = server_run(&cfg, ctl);
	config_free(&cfg);
	return rc;
}
