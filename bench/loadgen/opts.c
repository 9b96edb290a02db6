#include "opts.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

enum {
	OPT_HOST = 256, OPT_PORT, OPT_DOMAIN, OPT_DIRECT_TLS, OPT_TLS_RESUME, OPT_USERS_PREFIX, OPT_FIRST_USER,
	OPT_PASSWORD, OPT_MECH, OPT_RESOURCE, OPT_SRC_NET, OPT_SRC_COUNT, OPT_THREADS,
	OPT_CONCURRENCY, OPT_DURATION, OPT_LOGIN_TIMEOUT, OPT_QUIET, OPT_CLIENTS, OPT_HOLD,
	OPT_STDIN, OPT_LOGINS, OPT_USERS, OPT_PAIRS, OPT_RATES, OPT_STEP_SECONDS,
	OPT_DRAIN_SECONDS, OPT_STOP_P99, OPT_BODY_SIZE, OPT_MAX_QUEUE, OPT_CONTACTS,
	OPT_SETUP_ROSTERS, OPT_SETUP_ONLY, OPT_SECONDS, OPT_CHURN, OPT_ROOMS, OPT_ROOM_SIZE,
	OPT_SENDERS, OPT_MUC_SERVICE, OPT_ROOM_PREFIX, OPT_SERVER_PID, OPT_SMOKE, OPT_HELP,
	OPT_MESSAGES, OPT_HEAVY, OPT_HEAVY_EVERY, OPT_DEEP, OPT_PAGE, OPT_QUERIES, OPT_FILL,
	OPT_FILL_RATE, OPT_SM, OPT_MODE, OPT_RECONNECT_CONCURRENCY,
};

static const struct option opts_table[] = {
	{ "host", required_argument, NULL, OPT_HOST },
	{ "port", required_argument, NULL, OPT_PORT },
	{ "domain", required_argument, NULL, OPT_DOMAIN },
	{ "direct-tls", no_argument, NULL, OPT_DIRECT_TLS },
	{ "tls-resume", no_argument, NULL, OPT_TLS_RESUME },
	{ "users-prefix", required_argument, NULL, OPT_USERS_PREFIX },
	{ "first-user", required_argument, NULL, OPT_FIRST_USER },
	{ "password", required_argument, NULL, OPT_PASSWORD },
	{ "mech", required_argument, NULL, OPT_MECH },
	{ "resource", required_argument, NULL, OPT_RESOURCE },
	{ "src-net", required_argument, NULL, OPT_SRC_NET },
	{ "src-count", required_argument, NULL, OPT_SRC_COUNT },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "concurrency", required_argument, NULL, OPT_CONCURRENCY },
	{ "duration", required_argument, NULL, OPT_DURATION },
	{ "login-timeout", required_argument, NULL, OPT_LOGIN_TIMEOUT },
	{ "quiet", no_argument, NULL, OPT_QUIET },
	{ "clients", required_argument, NULL, OPT_CLIENTS },
	{ "hold", required_argument, NULL, OPT_HOLD },
	{ "stdin", no_argument, NULL, OPT_STDIN },
	{ "logins", required_argument, NULL, OPT_LOGINS },
	{ "users", required_argument, NULL, OPT_USERS },
	{ "pairs", required_argument, NULL, OPT_PAIRS },
	{ "rates", required_argument, NULL, OPT_RATES },
	{ "step-seconds", required_argument, NULL, OPT_STEP_SECONDS },
	{ "drain-seconds", required_argument, NULL, OPT_DRAIN_SECONDS },
	{ "stop-p99-ms", required_argument, NULL, OPT_STOP_P99 },
	{ "body-size", required_argument, NULL, OPT_BODY_SIZE },
	{ "max-queue-kb", required_argument, NULL, OPT_MAX_QUEUE },
	{ "contacts", required_argument, NULL, OPT_CONTACTS },
	{ "setup-rosters", no_argument, NULL, OPT_SETUP_ROSTERS },
	{ "setup-only", no_argument, NULL, OPT_SETUP_ONLY },
	{ "seconds", required_argument, NULL, OPT_SECONDS },
	{ "churn", required_argument, NULL, OPT_CHURN },
	{ "rooms", required_argument, NULL, OPT_ROOMS },
	{ "room-size", required_argument, NULL, OPT_ROOM_SIZE },
	{ "senders", required_argument, NULL, OPT_SENDERS },
	{ "muc-service", required_argument, NULL, OPT_MUC_SERVICE },
	{ "room-prefix", required_argument, NULL, OPT_ROOM_PREFIX },
	{ "server-pid", required_argument, NULL, OPT_SERVER_PID },
	{ "messages", required_argument, NULL, OPT_MESSAGES },
	{ "heavy", required_argument, NULL, OPT_HEAVY },
	{ "heavy-every", required_argument, NULL, OPT_HEAVY_EVERY },
	{ "deep", required_argument, NULL, OPT_DEEP },
	{ "page", required_argument, NULL, OPT_PAGE },
	{ "queries", required_argument, NULL, OPT_QUERIES },
	{ "fill", no_argument, NULL, OPT_FILL },
	{ "fill-rate", required_argument, NULL, OPT_FILL_RATE },
	{ "sm", no_argument, NULL, OPT_SM },
	{ "mode", required_argument, NULL, OPT_MODE },
	{ "reconnect-concurrency", required_argument, NULL, OPT_RECONNECT_CONCURRENCY },
	{ "smoke", no_argument, NULL, OPT_SMOKE },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

void opts_usage(FILE *f)
{
	fputs(
"usage: natter-load SCENARIO [OPTIONS]\n"
"\n"
"scenarios (each prints one JSON object on stdout, a summary on stderr):\n"
"  idle      log in --clients K, hold them --hold S seconds (or until\n"
"            SIGINT/SIGTERM, or stdin closes with --stdin); prints 'ready'\n"
"  login     --logins L full logins (connect, login, close) by\n"
"            --concurrency C connectors over --users K accounts\n"
"  chat      --pairs P online pairs send ~--body-size byte messages at each\n"
"            offered rate of --rates (msgs/s, aggregate) for --step-seconds\n"
"  muc       --rooms N rooms of --room-size K occupants; --senders S of each\n"
"            room send groupchat messages at each offered rate of --rates\n"
"            (msgs/s sent, all rooms together); every occupant receives\n"
"  presence  --users U with --contacts R each log out and in again for\n"
"            --seconds S; counts presence stanzas received per second\n"
"  mam       message archive (XEP-0313) queries on an archive of --messages\n"
"            over --users (made over XMPP first with --fill): latency of the\n"
"            latest page and of a page --deep messages back\n"
"  pep       one user with --contacts R (all online, +notify in their caps)\n"
"            publishes avatar metadata (XEP-0084) at each rate of --rates\n"
"            (publishes/s); notifications/s and publish-to-last latency\n"
"  reconnect --clients K log in, all lose their connections at once (TCP\n"
"            reset) and come back (--mode); reconnects/s, time until all\n"
"            are back, latency, server CPU per reconnect\n"
"\n"
"server and accounts:\n"
"  --host ADDR (127.0.0.1)  --port N (5222)  --domain D (localhost)\n"
"  --direct-tls             TLS from the first byte (XEP-0368) instead of STARTTLS\n"
"  --tls-resume             resume TLS sessions (tickets) instead of full handshakes\n"
"  --users-prefix P (user)  --first-user N (1): accounts are P<N>, P<N+1>, ...\n"
"  --password PW (password) --mech scram|plain (scram = SCRAM-SHA-1)\n"
"  --resource R (load)      resources are R-<thread>-<serial>\n"
"\n"
"generator:\n"
"  --src-net CIDR (127.0.0.0/8)  --src-count N (256; 0 = do not bind)\n"
"                           source addresses to rotate through\n"
"  --threads T (1)          worker threads, each with its own event loop\n"
"  --concurrency C (50)     logins in flight at once (all threads together)\n"
"  --duration S (300)       hard cap on the whole run\n"
"  --login-timeout S (30)   per connection, connect to roster result\n"
"  --server-pid PID[,PID]   also report the server's CPU (from /proc)\n"
"  --smoke                  tiny defaults for every scenario (seconds)\n"
"  --quiet                  no progress lines on stderr\n"
"\n"
"idle:      --clients K (100) --hold S (10) --stdin\n"
"           --sm             enable stream management (XEP-0198, resume='true')\n"
"reconnect: --clients K (5000) --mode full|resume|fast (full)\n"
"           --reconnect-concurrency N (500) reconnects in flight after the cut\n"
"           full: full TLS handshake, SASL, bind, roster, presence;\n"
"           resume: TLS resumption, SASL, XEP-0198 <resume/>;\n"
"           fast: TLS resumption, SASL2 HT-SHA-256-NONE FAST token (XEP-0484)\n"
"           with inline <resume/> (Bind 2 if it fails). Exit status 3 when\n"
"           the server lacks what the mode needs\n"
"login:     --logins L (1000) --users K (100)\n"
"chat:      --pairs P (100) --rates R1,R2,.. (1000,2000,5000,10k,20k,50k,100k,200k)\n"
"           --step-seconds S (5) --drain-seconds S (2) --stop-p99-ms MS (1000)\n"
"           --body-size B (100) --max-queue-kb KB (256)\n"
"muc:       --rooms N (1) --room-size K (100) --senders S (5, per room)\n"
"           --muc-service D (conference.DOMAIN) --room-prefix P (bench)\n"
"           --rates (10,20,50,100,200,500,1000,2000,5000 msgs/s sent), and the\n"
"           other chat options; reports deliveries/s with p99 < 50 ms\n"
"presence:  --users U (100) --contacts R (10) --seconds S (10)\n"
"           --churn N (U/10)  users logging out and in again at any moment\n"
"           --setup-rosters  make every user a mutual contact of R neighbours\n"
"           --setup-only     ... and stop there\n"
"mam:       --users U (100) --messages M (10000) --heavy H (4) --heavy-every N (20)\n"
"           --deep D (10000) --page N (50) --queries Q (100, of each kind, per\n"
"           heavy user) --fill (send the archive over XMPP first)\n"
"           --fill-rate R (10000 msgs/s at most)\n"
"pep:       --contacts R (500) --rates (1,2,5,10,20,50,100 publishes/s)\n"
"           --step-seconds S --drain-seconds S --stop-p99-ms MS\n"
"           --setup-rosters  make the contacts mutual over XMPP first\n", f);
}

static int opts_uint(const char *name, const char *s, unsigned long max, unsigned *out)
{
	char *end;
	double v = strtod(s, &end);
	if (*end == 'k' || *end == 'K') {
		v *= 1000;
		end++;
	} else if (*end == 'm' || *end == 'M') {
		v *= 1000000;
		end++;
	}
	if (end == s || *end || v < 0 || v > (double)max || v != (double)(unsigned long)v) {
		fprintf(stderr, "natter-load: --%s: not a whole number up to %lu: %s\n", name, max, s);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int opts_seconds(const char *name, const char *s, double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || !(v >= 0) || v > 86400 * 7) {
		fprintf(stderr, "natter-load: --%s: not a number of seconds: %s\n", name, s);
		return -1;
	}
	*out = v;
	return 0;
}

static int opts_rates(struct opts *o, const char *s)
{
	char *copy = strdup(s);
	o->nrates = 0;
	for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (o->nrates == OPTS_MAX_RATES || opts_uint("rates", tok, 100000000, &o->rates[o->nrates]) < 0 ||
		    o->rates[o->nrates] == 0) {
			fprintf(stderr, "natter-load: --rates: up to %d positive rates\n", OPTS_MAX_RATES);
			free(copy);
			return -1;
		}
		o->nrates++;
	}
	free(copy);
	return o->nrates ? 0 : -1;
}

static int opts_pids(struct opts *o, const char *s)
{
	char *copy = strdup(s);
	for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		unsigned pid;
		if (o->nserver_pids == OPTS_MAX_PIDS || opts_uint("server-pid", tok, 1u << 30, &pid) < 0) {
			free(copy);
			return -1;
		}
		o->server_pids[o->nserver_pids++] = (int)pid;
	}
	free(copy);
	return 0;
}

/* CIDR a.b.c.d/len: addresses from network+1 to broadcast-1. */
static int opts_src_net(struct opts *o, const char *s, uint32_t *usable)
{
	char addr[32];
	const char *slash = strchr(s, '/');
	unsigned len = 32;
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	struct in_addr in;
	if (n >= sizeof addr)
		goto bad;
	memcpy(addr, s, n);
	addr[n] = '\0';
	if (inet_pton(AF_INET, addr, &in) != 1)
		goto bad;
	if (slash && (opts_uint("src-net", slash + 1, 32, &len) < 0))
		goto bad;
	uint32_t mask = len ? ~(uint32_t)0 << (32 - len) : 0;
	uint32_t net = ntohl(in.s_addr) & mask;
	if (len >= 31) {
		o->src_base = ntohl(in.s_addr);
		*usable = 1;
	} else {
		o->src_base = net + 1;
		*usable = (uint32_t)((1ull << (32 - len)) - 2);
	}
	return 0;
bad:
	fprintf(stderr, "natter-load: --src-net: expected A.B.C.D/LEN: %s\n", s);
	return -1;
}

static void opts_defaults(struct opts *o, bool smoke)
{
	memset(o, 0, sizeof *o);
	o->host = "127.0.0.1";
	o->port = 5222;
	o->domain = "localhost";
	o->users_prefix = "user";
	o->first_user = 1;
	o->password = "password";
	o->mech = MECH_SCRAM_SHA1;
	o->resource = "load";
	o->src_base = (127u << 24) + 1;
	o->src_count = 256;
	o->threads = 1;
	o->concurrency = 50;
	o->duration = 300;
	o->login_timeout = 30;
	o->clients = 100;
	o->hold = 10;
	o->logins = 1000;
	o->users = 100;
	o->pairs = 100;
	static const unsigned rates[] = { 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000 };
	memcpy(o->rates, rates, sizeof rates);
	o->nrates = sizeof rates / sizeof rates[0];
	o->step_seconds = 5;
	o->drain_seconds = 2;
	o->stop_p99_ms = 1000;
	o->body_size = 100;
	o->max_queue_kb = 256;
	o->contacts = 10;
	o->seconds = 10;
	o->rooms = 1;
	o->room_size = 100;
	o->senders = 5;
	o->room_prefix = "bench";
	o->messages = 10000;
	o->heavy = 4;
	o->heavy_every = 20;
	o->deep = 10000;
	o->page = 50;
	o->queries = 100;
	o->fill_rate = 10000;
	o->mode = MODE_FULL;
	o->reconnect_concurrency = 500;
	if (smoke) {
		o->reconnect_concurrency = 5;
		o->concurrency = 5;
		o->duration = 60;
		o->login_timeout = 15;
		o->clients = 10;
		o->hold = 1;
		o->logins = 20;
		o->users = 10;
		o->pairs = 5;
		o->rates[0] = 50;
		o->rates[1] = 100;
		o->nrates = 2;
		o->step_seconds = 1;
		o->drain_seconds = 1;
		o->contacts = 4;
		o->seconds = 2;
		o->room_size = 5;
		o->senders = 2;
		o->messages = 2000;
		o->heavy = 2;
		o->deep = 100;
		o->page = 10;
		o->queries = 10;
	}
}

/* What the muc scenario needs once the command line is read: the service
 * named after the domain, rates of its own (a message to a room of K is K
 * deliveries, so chat's rates would be far too high), senders no more than
 * occupants. */
static void opts_muc(struct opts *o, bool smoke)
{
	if (!o->muc_service) {
		snprintf(o->muc_service_buf, sizeof o->muc_service_buf, "conference.%s", o->domain);
		o->muc_service = o->muc_service_buf;
	}
	if (o->senders > o->room_size)
		o->senders = o->room_size;
	if (strcmp(o->scenario, "muc") != 0 || o->rates_given)
		return;
	static const unsigned rates[] = { 10, 20, 50, 100, 200, 500, 1000, 2000, 5000 };
	static const unsigned smoke_rates[] = { 10, 20 };
	const unsigned *src = smoke ? smoke_rates : rates;
	o->nrates = smoke ? 2 : sizeof rates / sizeof rates[0];
	memcpy(o->rates, src, o->nrates * sizeof *src);
}

/* pep: 500 contacts and publish rates of its own unless given. */
static void opts_pep(struct opts *o, bool smoke)
{
	if (strcmp(o->scenario, "pep") != 0)
		return;
	if (!o->contacts_given)
		o->contacts = smoke ? 5 : 500;
	if (o->rates_given)
		return;
	static const unsigned rates[] = { 1, 2, 5, 10, 20, 50, 100, 200 };
	static const unsigned smoke_rates[] = { 5, 10 };
	const unsigned *src = smoke ? smoke_rates : rates;
	o->nrates = smoke ? 2 : sizeof rates / sizeof rates[0];
	memcpy(o->rates, src, o->nrates * sizeof *src);
}

int opts_parse(struct opts *o, int argc, char **argv)
{
	bool smoke = false;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--smoke") == 0)
			smoke = true;
	opts_defaults(o, smoke);
	if (argc < 2 || argv[1][0] == '-') {
		if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
			opts_usage(stdout);
			return 1;
		}
		opts_usage(stderr);
		return -1;
	}
	o->scenario = argv[1];
	uint32_t usable = (1u << 24) - 2;
	unsigned src_count = o->src_count;
	int c;
	optind = 2;
	while ((c = getopt_long(argc, argv, "h", opts_table, NULL)) != -1) {
		int rc = 0;
		unsigned u;
		switch (c) {
		case OPT_HOST: o->host = optarg; break;
		case OPT_PORT:
			rc = opts_uint("port", optarg, 65535, &u);
			o->port = (int)u;
			break;
		case OPT_DOMAIN: o->domain = optarg; break;
		case OPT_DIRECT_TLS: o->direct_tls = true; break;
		case OPT_TLS_RESUME: o->tls_resume = true; break;
		case OPT_USERS_PREFIX: o->users_prefix = optarg; break;
		case OPT_FIRST_USER: rc = opts_uint("first-user", optarg, 1u << 30, &o->first_user); break;
		case OPT_PASSWORD: o->password = optarg; break;
		case OPT_MECH:
			if (strcmp(optarg, "scram") == 0 || strcmp(optarg, "SCRAM-SHA-1") == 0) {
				o->mech = MECH_SCRAM_SHA1;
			} else if (strcmp(optarg, "plain") == 0 || strcmp(optarg, "PLAIN") == 0) {
				o->mech = MECH_PLAIN;
			} else {
				fprintf(stderr, "natter-load: --mech: scram or plain\n");
				rc = -1;
			}
			break;
		case OPT_RESOURCE: o->resource = optarg; break;
		case OPT_SRC_NET: rc = opts_src_net(o, optarg, &usable); break;
		case OPT_SRC_COUNT: rc = opts_uint("src-count", optarg, 1u << 24, &src_count); break;
		case OPT_THREADS: rc = opts_uint("threads", optarg, 256, &o->threads); break;
		case OPT_CONCURRENCY: rc = opts_uint("concurrency", optarg, 1000000, &o->concurrency); break;
		case OPT_DURATION: rc = opts_seconds("duration", optarg, &o->duration); break;
		case OPT_LOGIN_TIMEOUT: rc = opts_seconds("login-timeout", optarg, &o->login_timeout); break;
		case OPT_QUIET: o->quiet = true; break;
		case OPT_CLIENTS:
			rc = opts_uint("clients", optarg, 10000000, &o->clients);
			o->clients_given = true;
			break;
		case OPT_HOLD: rc = opts_seconds("hold", optarg, &o->hold); break;
		case OPT_SM: o->sm = true; break;
		case OPT_MODE:
			if (strcmp(optarg, "full") == 0)
				o->mode = MODE_FULL;
			else if (strcmp(optarg, "resume") == 0)
				o->mode = MODE_RESUME;
			else if (strcmp(optarg, "fast") == 0)
				o->mode = MODE_FAST;
			else {
				fprintf(stderr, "natter-load: --mode is full, resume or fast\n");
				rc = -1;
			}
			break;
		case OPT_RECONNECT_CONCURRENCY:
			rc = opts_uint("reconnect-concurrency", optarg, 10000000, &o->reconnect_concurrency);
			break;
		case OPT_STDIN: o->stdin_eof = true; break;
		case OPT_LOGINS: rc = opts_uint("logins", optarg, 100000000, &o->logins); break;
		case OPT_USERS: rc = opts_uint("users", optarg, 10000000, &o->users); break;
		case OPT_PAIRS: rc = opts_uint("pairs", optarg, 5000000, &o->pairs); break;
		case OPT_RATES:
			rc = opts_rates(o, optarg);
			o->rates_given = true;
			break;
		case OPT_STEP_SECONDS: rc = opts_seconds("step-seconds", optarg, &o->step_seconds); break;
		case OPT_DRAIN_SECONDS: rc = opts_seconds("drain-seconds", optarg, &o->drain_seconds); break;
		case OPT_STOP_P99: rc = opts_seconds("stop-p99-ms", optarg, &o->stop_p99_ms); break;
		case OPT_BODY_SIZE: rc = opts_uint("body-size", optarg, 65536, &o->body_size); break;
		case OPT_MAX_QUEUE: rc = opts_uint("max-queue-kb", optarg, 1u << 20, &o->max_queue_kb); break;
		case OPT_CONTACTS:
			rc = opts_uint("contacts", optarg, 100000, &o->contacts);
			o->contacts_given = true;
			break;
		case OPT_MESSAGES: rc = opts_uint("messages", optarg, 1000000000, &o->messages); break;
		case OPT_HEAVY: rc = opts_uint("heavy", optarg, 1000000, &o->heavy); break;
		case OPT_HEAVY_EVERY: rc = opts_uint("heavy-every", optarg, 1000000, &o->heavy_every); break;
		case OPT_DEEP: rc = opts_uint("deep", optarg, 100000000, &o->deep); break;
		case OPT_PAGE: rc = opts_uint("page", optarg, 1000, &o->page); break;
		case OPT_QUERIES: rc = opts_uint("queries", optarg, 10000000, &o->queries); break;
		case OPT_FILL: o->fill = true; break;
		case OPT_FILL_RATE: rc = opts_uint("fill-rate", optarg, 10000000, &o->fill_rate); break;
		case OPT_SETUP_ROSTERS: o->setup_rosters = true; break;
		case OPT_SETUP_ONLY: o->setup_rosters = o->setup_only = true; break;
		case OPT_SECONDS: rc = opts_seconds("seconds", optarg, &o->seconds); break;
		case OPT_CHURN: rc = opts_uint("churn", optarg, 10000000, &o->churn); break;
		case OPT_ROOMS: rc = opts_uint("rooms", optarg, 1000000, &o->rooms); break;
		case OPT_ROOM_SIZE: rc = opts_uint("room-size", optarg, 1000000, &o->room_size); break;
		case OPT_SENDERS: rc = opts_uint("senders", optarg, 1000000, &o->senders); break;
		case OPT_MUC_SERVICE: o->muc_service = optarg; break;
		case OPT_ROOM_PREFIX: o->room_prefix = optarg; break;
		case OPT_SERVER_PID: rc = opts_pids(o, optarg); break;
		case OPT_SMOKE: break;
		case 'h':
		case OPT_HELP:
			opts_usage(stdout);
			return 1;
		default:
			return -1;
		}
		if (rc < 0)
			return -1;
	}
	if (optind < argc) {
		fprintf(stderr, "natter-load: unexpected argument: %s\n", argv[optind]);
		return -1;
	}
	o->src_count = src_count < usable ? src_count : usable;
	if (o->threads == 0 || o->concurrency == 0) {
		fprintf(stderr, "natter-load: --threads and --concurrency must be at least 1\n");
		return -1;
	}
	if (o->body_size < 32)
		o->body_size = 32;
	opts_muc(o, smoke);
	opts_pep(o, smoke);
	if (strcmp(o->scenario, "reconnect") == 0 && !o->clients_given)
		o->clients = smoke ? 10 : 5000;
	if (strcmp(o->scenario, "mam") == 0 && (o->users < 2 || o->heavy == 0 || o->heavy > o->users ||
						 o->heavy_every == 0 || o->page == 0)) {
		fprintf(stderr, "natter-load: mam needs --users of at least 2, --heavy from 1 to --users, "
				"--heavy-every and --page of at least 1\n");
		return -1;
	}
	return 0;
}
