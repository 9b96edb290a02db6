/* natterctl: the admin tool. For now it manages accounts straight in the
 * store (SQLite lets it write while natterd runs); commands that need the
 * running server will go over its control socket.
 *
 *   natterctl [-c CONFIG] user add JID [--password-file FILE]
 *   natterctl [-c CONFIG] user passwd JID [--password-file FILE]
 *   natterctl [-c CONFIG] user del JID
 *   natterctl [-c CONFIG] user list [DOMAIN]
 *   natterctl [-c CONFIG] directory refresh
 *   natterctl [-c CONFIG] s2s
 *   natterctl [-c CONFIG] ports
 *   natterctl [-c CONFIG] cert [DOMAIN]
 *   natterctl [-c CONFIG] dns DOMAIN [--target HOST] [--resolver ADDR[@PORT]]
 *   natterctl [-c CONFIG] dns --remote DOMAIN [--resolver ADDR[@PORT]] [--timeout SECONDS]
 *   natterctl [-c CONFIG] journal verify [--host DOMAIN] [--key PUBFILE]
 *   natterctl [-c CONFIG] journal export (--user JID | --room JID) [--from TIME] [--to TIME]
 *                                        [--format json|mbox] [--host DOMAIN]
 *   natterctl [-c CONFIG] journal pubkey
 *
 * Exit status 0 on success, 1 on any error (message on stderr). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unbound.h>
#include <unistd.h>
#include <uv.h>

#include "auth/fast.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/control.h"
#include "core/log.h"
#include "core/util.h"
#include "dns/dns.h"
#include "jid/jid.h"
#include "journal/journal.h"
#include "storage/storage.h"
#include "tls/certinfo.h"

/* Longest password accepted, in bytes. */
#define NATTERCTL_PASSWORD_MAX 1023

struct natterctl {
	struct config cfg;
	const char *password_file; /* NULL or "-": stdin or the terminal */
	struct storage *st;        /* opened by natterctl_open() */
	const struct storage_driver *driver;
};

static void natterctl_usage(FILE *out)
{
	fputs("usage: natterctl [-c CONFIG] COMMAND\n"
	      "\n"
	      "commands:\n"
	      "  user add JID [--password-file FILE]     create an account\n"
	      "  user passwd JID [--password-file FILE]  set an account's password\n"
	      "  user del JID                            delete an account\n"
	      "  user list [DOMAIN]                      list accounts (of one domain)\n"
	      "  user add-bulk PREFIX COUNT DOMAIN [--password-file FILE]\n"
	      "                                          create PREFIX1..PREFIXCOUNT@DOMAIN,\n"
	      "                                          all with one password and one salt\n"
	      "                                          (for benchmarks and tests only)\n"
	      "  fast list JID                           devices holding FAST tokens (XEP-0484)\n"
	      "  fast revoke JID [DEVICE]                forget a device's tokens (all without DEVICE)\n"
	      "  directory refresh                       re-read the directory's accounts and\n"
	      "                                          groups now (running natterd); waits\n"
	      "                                          until the rosters are updated\n"
	      "  ports                                   the TCP ports to open in the firewall\n"
	      "  cert [DOMAIN]                           each host's certificate: names, expiry,\n"
	      "                                          SHA-256 and SHA-1 fingerprints\n"
	      "  s2s                                     list the live federation links\n"
	      "                                          (running natterd)\n"
	      "  memory                                  the allocator and the heap it holds\n"
	      "                                          (running natterd)\n"
	      "  storage                                 the storage thread's backlog: jobs\n"
	      "                                          queued, writes not committed yet\n"
	      "                                          (running natterd)\n"
	      "  room list                               the chat rooms (running natterd)\n"
	      "  room info ROOM                          a room's settings and occupants\n"
	      "  room create ROOM [OWNER]                a persistent room, owned by OWNER\n"
	      "  room destroy ROOM [REASON]              ends a room; occupants are told\n"
	      "  mam expire --before DATETIME [--user JID]\n"
	      "                                          delete archived messages older than\n"
	      "                                          DATETIME (XEP-0082, e.g.\n"
	      "                                          2026-01-01T00:00:00Z) of every archive\n"
	      "                                          or of one account\n"
	      "  mam index [--user JID]                  index the words of every archive (or\n"
	      "                                          one account's) for search now, not at\n"
	      "                                          its first search\n"
	      "  dns DOMAIN [--target HOST] [--resolver ADDR[@PORT]]\n"
	      "                                          print the SRV records to publish for\n"
	      "                                          a configured host (pointing to HOST,\n"
	      "                                          default this machine's FQDN, else the\n"
	      "                                          host's name) and check them in DNS;\n"
	      "                                          exit 0 if all ok\n"
	      "  dns --remote DOMAIN [--resolver ADDR[@PORT]] [--timeout SECONDS]\n"
	      "                                          show where natterd would connect to\n"
	      "                                          reach a remote server's DOMAIN\n"
	      "                                          (give up after SECONDS, default 30)\n"
	      "  journal verify [--host DOMAIN] [--key PUBFILE]\n"
	      "                                          check the archive-all journal of each\n"
	      "                                          host with one (or of DOMAIN): every\n"
	      "                                          record, chain link and checkpoint\n"
	      "                                          signature; exit 0 if intact, 1 if\n"
	      "                                          anything was edited, removed,\n"
	      "                                          reordered or cut (each place named)\n"
	      "  journal export (--user JID | --room JID) [--from TIME] [--to TIME]\n"
	      "                 [--format json|mbox] [--host DOMAIN]\n"
	      "                                          one user's or one room's messages\n"
	      "                                          from the journal, TIME in ISO 8601\n"
	      "                                          (UTC unless it has a zone), --to\n"
	      "                                          excluded; json (default) or mbox\n"
	      "  journal pubkey                          print the journal's public key (PEM)\n"
	      "                                          for an auditor's verify --key\n"
	      "\n"
	      "options:\n"
	      "  -c, --config CONFIG  configuration file (default: built-in defaults)\n"
	      "  -h, --help           show this help\n"
	      "\n"
	      "JID is a bare address, local@domain, of a configured host. The password\n"
	      "is read from the first line of FILE, else (no FILE, or FILE is -) from\n"
	      "one line of standard input when it is not a terminal, else asked for\n"
	      "twice without echo.\n",
	      out);
}

__attribute__((format(printf, 1, 2)))
static int natterctl_error(const char *fmt, ...)
{
	va_list ap;
	fputs("natterctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* Splits and normalises a bare JID of a configured host into local and
 * domain (each JID_PART_MAX + 1 bytes). Returns 0 or 1 (message printed). */
static int natterctl_jid(const struct config *cfg, const char *arg, char *local, char *domain)
{
	const char *at = strchr(arg, '@');
	if (!at || strchr(arg, '/'))
		return natterctl_error("'%s' is not a bare JID (local@domain)", arg);
	if (jid_prep_local(arg, (size_t)(at - arg), local, JID_PART_MAX + 1) <= 0)
		return natterctl_error("'%s': invalid localpart", arg);
	if (jid_prep_domain(at + 1, strlen(at + 1), domain, JID_PART_MAX + 1) <= 0)
		return natterctl_error("'%s': invalid domain", arg);
	if (!config_find_host(cfg, domain))
		return natterctl_error("%s is not a configured host", domain);
	return 0;
}

/* Accounts of a host with auth: ldap are the directory's: an entry in
 * natter's store would be an account that can neither log in nor receive
 * messages. Returns 0 when domain keeps its accounts in the store, else 1
 * with a message that says so; doing is the user subcommand, what the
 * account (or accounts) it names. */
static int natterctl_store_host(const struct config *cfg, const char *doing, const char *what,
				const char *domain)
{
	const struct config_host *h = config_find_host(cfg, domain);
	if (h->auth != HOST_AUTH_LDAP)
		return 0;
	const char *there = "create the user in the directory: its entries can log in at once";
	if (strcmp(doing, "passwd") == 0)
		there = "change the password in the directory";
	else if (strcmp(doing, "del") == 0)
		there = "delete or lock the entry in the directory, then run natterctl directory "
			"refresh";
	return natterctl_error("user %s %s: the accounts of %s come from its directory (auth: "
			       "ldap, %s), not from natterctl: %s",
			       doing, what, domain, h->ldap.uri, there);
}

/* Reads one line into buf without its line end. Returns 0, or 1 (message
 * printed) on EOF before any byte, error, or a line too long. */
static int natterctl_read_line(FILE *f, const char *what, char *buf, size_t cap)
{
	if (!fgets(buf, (int)cap, f))
		return natterctl_error("cannot read password from %s: %s", what,
				       ferror(f) ? strerror(errno) : "no input");
	size_t n = strlen(buf);
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	else if (n == cap - 1 && !feof(f))
		return natterctl_error("password from %s is too long", what);
	if (n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	return 0;
}

/* Asks on the terminal with echo off. The signals that would stop us with
 * echo still off are held until the terminal is restored; a ^C then takes
 * effect as usual. */
static int natterctl_prompt(const char *prompt, char *buf, size_t cap)
{
	struct termios saved, quiet;
	sigset_t hold, old;
	int rc;

	if (tcgetattr(STDIN_FILENO, &saved) < 0)
		return natterctl_error("cannot read the terminal: %s", strerror(errno));
	sigemptyset(&hold);
	sigaddset(&hold, SIGINT);
	sigaddset(&hold, SIGQUIT);
	sigaddset(&hold, SIGTSTP);
	sigaddset(&hold, SIGTERM);
	sigaddset(&hold, SIGHUP);
	sigprocmask(SIG_BLOCK, &hold, &old);
	quiet = saved;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	fputs(prompt, stderr);
	fflush(stderr);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	rc = natterctl_read_line(stdin, "the terminal", buf, cap);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* Gets the new password into buf (cap bytes). Returns 0 or 1. */
static int natterctl_password(const struct natterctl *ctl, char *buf, size_t cap)
{
	int rc;

	/* "-" is standard input, as for other tools; "./-" names such a file. */
	if (ctl->password_file && strcmp(ctl->password_file, "-") != 0) {
		FILE *f = fopen(ctl->password_file, "r");
		if (!f)
			return natterctl_error("%s: %s", ctl->password_file, strerror(errno));
		rc = natterctl_read_line(f, ctl->password_file, buf, cap);
		fclose(f);
	} else if (!isatty(STDIN_FILENO)) {
		rc = natterctl_read_line(stdin, "standard input", buf, cap);
	} else {
		char again[NATTERCTL_PASSWORD_MAX + 2];
		rc = natterctl_prompt("Password: ", buf, cap);
		if (rc == 0)
			rc = natterctl_prompt("Password (again): ", again, sizeof again);
		if (rc == 0 && strcmp(buf, again) != 0)
			rc = natterctl_error("passwords do not match");
		explicit_bzero(again, sizeof again);
	}
	if (rc == 0 && buf[0] == '\0')
		rc = natterctl_error("empty password refused");
	return rc;
}

static int natterctl_open(struct natterctl *ctl)
{
	char err[512];

	ctl->driver = storage_driver_find(ctl->cfg.storage);
	if (!ctl->driver)
		return natterctl_error("unknown storage driver '%s'", ctl->cfg.storage);
	ctl->st = ctl->driver->open(ctl->cfg.data_dir, err, sizeof err);
	if (!ctl->st)
		return natterctl_error("cannot open storage: %s", err);
	return 0;
}

/* Derives the secrets of a new password and stores them for local@domain. */
static int natterctl_set_password(struct natterctl *ctl, const char *local, const char *domain)
{
	char password[NATTERCTL_PASSWORD_MAX + 2];
	struct user_credentials cred;
	int rc = natterctl_password(ctl, password, sizeof password);

	if (rc == 0 && storage_credentials_from_password(
			       password, (unsigned)ctl->cfg.scram_iterations, &cred) < 0)
		rc = natterctl_error("cannot derive keys: the password is not valid "
				     "(control characters?)");
	explicit_bzero(password, sizeof password);
	if (rc == 0 && ctl->driver->user_put(ctl->st, domain, local, &cred) < 0)
		rc = natterctl_error("cannot store %s@%s", local, domain);
	/* A new password ends the FAST tokens the old one got (XEP-0484). */
	if (rc == 0 && ctl->driver->map_del(ctl->st, domain, local, FAST_MAP, NULL) < 0)
		rc = natterctl_error("cannot forget the FAST tokens of %s@%s", local, domain);
	explicit_bzero(&cred, sizeof cred);
	return rc;
}

/* add refuses an existing account, passwd a missing one. */
static int natterctl_user_set(struct natterctl *ctl, const char *jid, int create)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	struct user_credentials cred;

	if (natterctl_jid(&ctl->cfg, jid, local, domain) ||
	    natterctl_store_host(&ctl->cfg, create ? "add" : "passwd", jid, domain) ||
	    natterctl_open(ctl))
		return 1;
	int found = ctl->driver->user_get(ctl->st, domain, local, &cred);
	explicit_bzero(&cred, sizeof cred);
	if (found < 0)
		return natterctl_error("cannot read %s@%s", local, domain);
	if (create && found == 0)
		return natterctl_error("user %s@%s already exists", local, domain);
	if (!create && found == 1)
		return natterctl_error("no such user %s@%s", local, domain);
	return natterctl_set_password(ctl, local, domain);
}

static int natterctl_user_del(struct natterctl *ctl, const char *jid)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];

	if (natterctl_jid(&ctl->cfg, jid, local, domain) ||
	    natterctl_store_host(&ctl->cfg, "del", jid, domain) || natterctl_open(ctl))
		return 1;
	int rc = ctl->driver->user_del(ctl->st, domain, local);
	if (rc < 0)
		return natterctl_error("cannot delete %s@%s", local, domain);
	if (rc == 1)
		return natterctl_error("no such user %s@%s", local, domain);
	return 0;
}

static void natterctl_print_user(void *arg, const char *domain, const char *local)
{
	(void)arg;
	printf("%s@%s\n", local, domain);
}

/* Any domain may be listed, configured or not: accounts of a host removed
 * from the config stay in the store. */
static int natterctl_user_list(struct natterctl *ctl, const char *arg)
{
	char domain[JID_PART_MAX + 1];

	if (arg && jid_prep_domain(arg, strlen(arg), domain, sizeof domain) <= 0)
		return natterctl_error("'%s': invalid domain", arg);
	if (natterctl_open(ctl))
		return 1;
	if (ctl->driver->user_list(ctl->st, arg ? domain : NULL, natterctl_print_user, NULL) < 0)
		return natterctl_error("cannot list users");
	if (fflush(stdout) != 0)
		return natterctl_error("stdout: %s", strerror(errno));
	return 0;
}

/* Benchmarks need tens of thousands of accounts: the keys are derived once
 * and shared, which a real deployment must never do (one salt for all). */
static int natterctl_user_add_bulk(struct natterctl *ctl, const char *prefix, const char *count_s,
				   const char *domain_arg)
{
	char domain[JID_PART_MAX + 1], local[JID_PART_MAX + 1];
	char password[NATTERCTL_PASSWORD_MAX + 2];
	struct user_credentials cred;
	char *end;
	long count = strtol(count_s, &end, 10);
	if (*end != '\0' || count < 1 || count > 10000000)
		return natterctl_error("add-bulk: COUNT must be 1..10000000");
	if (jid_prep_domain(domain_arg, strlen(domain_arg), domain, sizeof domain) <= 0 ||
	    config_find_host(&ctl->cfg, domain) == NULL)
		return natterctl_error("add-bulk: '%s' is not a configured host", domain_arg);
	if (natterctl_store_host(&ctl->cfg, "add-bulk", domain, domain) || natterctl_open(ctl) ||
	    natterctl_password(ctl, password, sizeof password))
		return 1;
	int rc = storage_credentials_from_password(password, (unsigned)ctl->cfg.scram_iterations,
						   &cred);
	explicit_bzero(password, sizeof password);
	if (rc < 0)
		return natterctl_error("cannot derive keys: the password is not valid");
	for (long i = 1; i <= count; i++) {
		char raw[JID_PART_MAX + 1];
		snprintf(raw, sizeof raw, "%s%ld", prefix, i);
		if (jid_prep_local(raw, strlen(raw), local, sizeof local) <= 0)
			return natterctl_error("add-bulk: '%s' is not a valid localpart", raw);
		if (ctl->driver->user_put(ctl->st, domain, local, &cred) < 0)
			return natterctl_error("cannot store %s@%s", local, domain);
	}
	explicit_bzero(&cred, sizeof cred);
	return 0;
}

/* Sends one command line to the running natterd's control socket and
 * prints its answer. Returns 0 when the answer starts with "ok". */
static int natterctl_control(struct natterctl *ctl, const char *command)
{
	char path[256];
	if (control_path(ctl->cfg.data_dir, path, sizeof path) != 0)
		return natterctl_error("data_dir is too long for a socket path");
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, path, strlen(path) + 1); /* control_path checked the length */
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return natterctl_error("cannot reach natterd at %s: %s (is it running with this "
				       "configuration?)", path, strerror(e));
	}
	char line[600];
	int n = snprintf(line, sizeof line, "%s\n", command);
	if (write(fd, line, (size_t)n) != n) {
		close(fd);
		return natterctl_error("cannot talk to natterd: %s", strerror(errno));
	}
	struct buf answer;
	buf_init(&answer);
	char chunk[4096];
	ssize_t got;
	while ((got = read(fd, chunk, sizeof chunk)) > 0)
		buf_append(&answer, chunk, (size_t)got);
	close(fd);
	int ok = answer.len >= 2 && memcmp(answer.data, "ok", 2) == 0;
	fwrite(answer.data, 1, answer.len, ok ? stdout : stderr);
	if (answer.len == 0)
		fputs("natterctl: natterd closed the connection without an answer\n", stderr);
	buf_free(&answer);
	return ok ? 0 : 1;
}

/* --- room --- */

/* natterctl room list | info ROOM | create ROOM [OWNER] | destroy ROOM
 * [REASON...]: asks the running natterd (muc_control). */
static int natterctl_room(struct natterctl *ctl, int argc, char **argv)
{
	static const char usage[] = "usage: natterctl room list | info ROOM | create ROOM [OWNER] "
				    "| destroy ROOM [REASON]";
	if (argc < 1)
		return natterctl_error("%s", usage);
	bool list = strcmp(argv[0], "list") == 0;
	bool one = strcmp(argv[0], "info") == 0;
	bool create = strcmp(argv[0], "create") == 0;
	bool destroy = strcmp(argv[0], "destroy") == 0;
	if (!(list && argc == 1) && !(one && argc == 2) && !(create && (argc == 2 || argc == 3)) &&
	    !(destroy && argc >= 2))
		return natterctl_error("%s", usage);
	struct buf cmd;
	buf_init(&cmd);
	buf_puts(&cmd, "room");
	for (int i = 0; i < argc; i++) {
		if (strpbrk(argv[i], "\r\n") != NULL) {
			buf_free(&cmd);
			return natterctl_error("a line break in '%s'", argv[i]);
		}
		buf_printf(&cmd, " %s", argv[i]);
	}
	if (cmd.len >= 590) {
		buf_free(&cmd);
		return natterctl_error("the command is too long");
	}
	int rc = natterctl_control(ctl, cmd.data);
	buf_free(&cmd);
	return rc;
}

/* --- dns --- */

#define NATTERCTL_DNS_TTL 3600
#define NATTERCTL_DNS_TYPE_A 1
#define NATTERCTL_DNS_TYPE_AAAA 28
#define NATTERCTL_DNS_TYPE_SRV 33

/* The SRV service of each listener type, in enum listener_type order. */
static const char *const natterctl_dns_services[] = {
	[LISTENER_C2S] = "_xmpp-client._tcp",
	[LISTENER_C2S_TLS] = "_xmpps-client._tcp",
	[LISTENER_S2S] = "_xmpp-server._tcp",
	[LISTENER_S2S_TLS] = "_xmpps-server._tcp",
};
#define NATTERCTL_DNS_N_TYPES (sizeof natterctl_dns_services / sizeof natterctl_dns_services[0])

/* What DNS holds for one name: records, or why there are none. */
struct natterctl_dns_answer {
	char error[128];        /* non-empty: the lookup failed */
	struct dns_srv srv[DNS_MAX_SRV];
	size_t n;
	bool dot;               /* the single record "." */
};

/* The addresses of one host, as text. */
struct natterctl_dns_host {
	char name[256];
	char error[128];
	char a[256], aaaa[512]; /* "" = none */
};

/* Lower-cases name and drops a final dot. */
static void natterctl_dns_canon(char *name)
{
	size_t n = strlen(name);
	if (n > 0 && name[n - 1] == '.')
		name[--n] = '\0';
	for (size_t i = 0; i < n; i++)
		name[i] = (char)tolower((unsigned char)name[i]);
}

/* This machine's fully qualified name into out: gethostname(), made
 * canonical by the resolver (AI_CANONNAME) when it can. Returns 0, or -1
 * when the machine has only a short name (then in out) or none. */
static int natterctl_dns_fqdn(char *out, size_t cap)
{
	char host[256];
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_flags = AI_CANONNAME }, *res;

	if (gethostname(host, sizeof host) != 0) {
		snprintf(out, cap, "?");
		return -1;
	}
	host[sizeof host - 1] = '\0';
	snprintf(out, cap, "%s", host);
	if (getaddrinfo(host, NULL, &hints, &res) == 0) {
		if (res->ai_canonname && strchr(res->ai_canonname, '.'))
			snprintf(out, cap, "%s", res->ai_canonname);
		freeaddrinfo(res);
	}
	natterctl_dns_canon(out);
	return strchr(out, '.') ? 0 : -1;
}

/* The server name the SRV records point to when no --target is given:
 * this machine's fully qualified name, else a name the host's
 * configuration gives (the Kerberos service host that clients must reach,
 * else the domain itself, a valid SRV target when it has addresses). A
 * note on stdout says which, so the operator can pick another. */
static void natterctl_dns_target(const struct config_host *h, char *target, size_t cap)
{
	char machine[256];
	if (natterctl_dns_fqdn(machine, sizeof machine) == 0) {
		snprintf(target, cap, "%s", machine);
		return;
	}
	bool krb = h->kerberos.keytab && h->kerberos.hostname;
	snprintf(target, cap, "%s", krb ? h->kerberos.hostname : h->domain);
	printf("; this machine has no fully qualified name (only '%s'): the records point to "
	       "%s, %s;\n; give --target HOST to name the server otherwise\n",
	       machine, target, krb ? "the host's kerberos hostname" : "the host's domain");
}

/* Why a lookup gave no answer, from libunbound's error or the rcode. */
static const char *natterctl_dns_failure(int rc, const struct ub_result *res)
{
	if (rc != 0)
		return ub_strerror(rc);
	return res->rcode == 2 ? "server failure" : res->rcode == 5 ? "refused" : "error answer";
}

/* Looks up name's SRV records into *ans. */
static void natterctl_dns_srv(struct ub_ctx *ub, const char *name, struct natterctl_dns_answer *ans)
{
	struct ub_result *res = NULL;
	int rc = ub_resolve(ub, name, NATTERCTL_DNS_TYPE_SRV, 1, &res);

	memset(ans, 0, sizeof *ans);
	if (rc != 0 || (res->rcode != 0 && res->rcode != 3)) {
		snprintf(ans->error, sizeof ans->error, "%s", natterctl_dns_failure(rc, res));
	} else if (res->havedata) {
		size_t count = 0;
		while (res->data[count])
			count++;
		for (size_t i = 0; i < count && ans->n < DNS_MAX_SRV; i++) {
			struct dns_srv *s = &ans->srv[ans->n];
			if (dns_srv_parse((unsigned char *)res->data[i], (size_t)res->len[i], s) < 0)
				continue;
			if (s->target[0] == '\0') {
				ans->dot = count == 1;
				continue;
			}
			s->ttl = res->ttl < 0 ? 0 : (uint32_t)res->ttl;
			ans->n++;
		}
	}
	if (res)
		ub_resolve_free(res);
}

/* Appends the addresses of one type to out (", " between them). Returns
 * -1 with h->error filled when the lookup failed. */
static int natterctl_dns_addrs(struct ub_ctx *ub, struct natterctl_dns_host *h, int type,
			       char *out, size_t cap)
{
	struct ub_result *res = NULL;
	int rc = ub_resolve(ub, h->name, type, 1, &res);
	int family = type == NATTERCTL_DNS_TYPE_A ? AF_INET : AF_INET6;
	size_t want = type == NATTERCTL_DNS_TYPE_A ? 4 : 16;

	out[0] = '\0';
	if (rc != 0 || (res->rcode != 0 && res->rcode != 3)) {
		snprintf(h->error, sizeof h->error, "%s", natterctl_dns_failure(rc, res));
		if (res)
			ub_resolve_free(res);
		return -1;
	}
	for (size_t i = 0; res->havedata && res->data[i]; i++) {
		char text[INET6_ADDRSTRLEN];
		size_t used = strlen(out);
		if ((size_t)res->len[i] != want || !inet_ntop(family, res->data[i], text, sizeof text))
			continue;
		snprintf(out + used, cap - used, "%s%s", used ? ", " : "", text);
	}
	ub_resolve_free(res);
	return 0;
}

static void natterctl_dns_host(struct ub_ctx *ub, const char *name, struct natterctl_dns_host *h)
{
	memset(h, 0, sizeof *h);
	snprintf(h->name, sizeof h->name, "%s", name);
	if (natterctl_dns_addrs(ub, h, NATTERCTL_DNS_TYPE_A, h->a, sizeof h->a) == 0)
		natterctl_dns_addrs(ub, h, NATTERCTL_DNS_TYPE_AAAA, h->aaaa, sizeof h->aaaa);
}

/* Writes the published records of ans as "P W PORT TARGET., ..." into out. */
static void natterctl_dns_published(const struct natterctl_dns_answer *ans, char *out, size_t cap)
{
	out[0] = '\0';
	for (size_t i = 0; i < ans->n; i++) {
		size_t used = strlen(out);
		snprintf(out + used, cap - used, "%s%u %u %u %s.", i ? ", " : "",
			 (unsigned)ans->srv[i].priority, (unsigned)ans->srv[i].weight,
			 (unsigned)ans->srv[i].port, ans->srv[i].target);
	}
}

/* Collects the distinct ports of one listener type, in config order. */
static size_t natterctl_dns_ports(const struct config *cfg, enum listener_type type, int *ports,
				  size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		bool seen = false;
		for (size_t k = 0; k < n; k++)
			seen |= ports[k] == l->port;
		if (l->type == type && !seen && n < cap)
			ports[n++] = l->port;
	}
	return n;
}

/* Compares what DNS has for one service with the records it should have
 * and prints the verdict. Returns the number of problems (0 or 1). */
static int natterctl_dns_check_service(const char *owner, int width,
				       const struct natterctl_dns_answer *ans, const int *ports,
				       size_t n_ports, const char *target)
{
	char published[2048];
	int problems = 0;

	natterctl_dns_published(ans, published, sizeof published);
	for (size_t p = 0; p < n_ports; p++) {
		bool found = false;
		for (size_t i = 0; i < ans->n; i++)
			found |= ans->srv[i].port == ports[p] && strcmp(ans->srv[i].target, target) == 0;
		printf("%-*s %5d  ", width, owner, ports[p]);
		if (ans->error[0])
			printf("error: %s\n", ans->error);
		else if (found)
			printf("ok\n");
		else if (ans->n == 0)
			printf("missing%s\n", ans->dot ? " (published \".\": service not offered)" : "");
		else
			printf("wrong: published %s\n", published);
		problems += !found;
	}
	return problems ? 1 : 0;
}

/* DANE (docs/federation.md): the TLSA records that match the host's
 * certificate, for the s2s ports, to publish in a DNSSEC-signed zone. */
static void natterctl_dns_tlsa(const struct natterctl *ctl, const char *domain,
			       const char *target, int ports[][16], const size_t *n_ports)
{
	char path[1100], err[1200];
	struct certinfo ci;
	certinfo_path(&ctl->cfg, config_find_host(&ctl->cfg, domain), path, sizeof path);
	if (n_ports[LISTENER_S2S] + n_ports[LISTENER_S2S_TLS] == 0)
		return;
	if (certinfo_read(path, &ci, err, sizeof err) != 0) {
		printf("\n; TLSA (DANE): cannot read the certificate %s\n", path);
		return;
	}
	printf("\n; TLSA for DANE, only in a DNSSEC-signed zone (certificate %s):\n", path);
	for (int t = LISTENER_S2S; t <= LISTENER_S2S_TLS; t++)
		for (size_t p = 0; p < n_ports[t]; p++)
			printf("_%d._tcp.%s. %d IN TLSA 3 1 1 %s\n", ports[t][p], target,
			       NATTERCTL_DNS_TTL, ci.spki_sha256);
}

/* Prints the records to publish for domain and checks them against DNS. */
static int natterctl_dns_check(struct natterctl *ctl, const char *domain_arg, const char *target_arg,
			       const char *resolver)
{
	char domain[JID_PART_MAX + 1], target[256], owner[NATTERCTL_DNS_N_TYPES][JID_PART_MAX + 32], err[512];
	int ports[NATTERCTL_DNS_N_TYPES][16];
	size_t n_ports[NATTERCTL_DNS_N_TYPES], total = 0;
	int width = 0, problems = 0;

	if (jid_prep_domain(domain_arg, strlen(domain_arg), domain, sizeof domain) <= 0)
		return natterctl_error("'%s': invalid domain", domain_arg);
	if (!config_find_host(&ctl->cfg, domain))
		return natterctl_error("%s is not a configured host", domain);
	if (target_arg)
		snprintf(target, sizeof target, "%s", target_arg);
	else
		natterctl_dns_target(config_find_host(&ctl->cfg, domain), target, sizeof target);
	natterctl_dns_canon(target);
	if (target[0] == '\0')
		return natterctl_error("--target: empty host name");
	for (size_t t = 0; t < NATTERCTL_DNS_N_TYPES; t++) {
		n_ports[t] = natterctl_dns_ports(&ctl->cfg, (enum listener_type)t, ports[t], 16);
		total += n_ports[t];
		snprintf(owner[t], sizeof owner[t], "%s.%s.", natterctl_dns_services[t], domain);
		if (n_ports[t] && (int)strlen(owner[t]) > width)
			width = (int)strlen(owner[t]);
	}
	if (total == 0)
		return natterctl_error("the configuration has no listeners: nothing to publish");

	printf("; SRV records to publish for %s (server %s.):\n", domain, target);
	for (size_t t = 0; t < NATTERCTL_DNS_N_TYPES; t++)
		for (size_t p = 0; p < n_ports[t]; p++)
			printf("%-*s %d IN SRV 0 5 %d %s.\n", width + 1, owner[t], NATTERCTL_DNS_TTL,
			       ports[t][p], target);

	/* Other servers reach the host's chat rooms at the service's own
	 * domain: the same server-to-server records, under that name. */
	const struct config_host *host = config_find_host(&ctl->cfg, domain);
	if (host->muc.enabled && (n_ports[LISTENER_S2S] || n_ports[LISTENER_S2S_TLS])) {
		char service[JID_PART_MAX + 16];
		snprintf(service, sizeof service, "%s%s", host->muc.domain ? "" : "conference.",
			 host->muc.domain ? host->muc.domain : domain);
		printf("; and for the chat service %s (docs/muc.md):\n", service);
		for (size_t t = LISTENER_S2S; t <= LISTENER_S2S_TLS; t++)
			for (size_t p = 0; p < n_ports[t]; p++)
				printf("%s.%s. %d IN SRV 0 5 %d %s.\n", natterctl_dns_services[t],
				       service, NATTERCTL_DNS_TTL, ports[t][p], target);
	}

	natterctl_dns_tlsa(ctl, domain, target, ports, n_ports);

	struct ub_ctx *ub = dns_ub_ctx_new(resolver, err, sizeof err);
	if (!ub)
		return natterctl_error("%s", err);
	printf("\n; in DNS now (resolver %s):\n", resolver ? resolver : "from /etc/resolv.conf");
	struct natterctl_dns_answer *ans = calloc(NATTERCTL_DNS_N_TYPES, sizeof *ans);
	if (!ans) {
		ub_ctx_delete(ub);
		return natterctl_error("out of memory");
	}
	for (size_t t = 0; t < NATTERCTL_DNS_N_TYPES; t++) {
		if (n_ports[t] == 0)
			continue;
		natterctl_dns_srv(ub, owner[t], &ans[t]);
		problems += natterctl_dns_check_service(owner[t], width, &ans[t], ports[t],
							n_ports[t], target);
	}

	/* The server's own name, then every other host the published records
	 * name: a record pointing at a name without addresses is a dead end. */
	struct natterctl_dns_host h;
	natterctl_dns_host(ub, target, &h);
	char name[260];
	snprintf(name, sizeof name, "%s.", target);
	if (h.error[0]) {
		printf("%-*s        error: %s\n", width, name, h.error);
		problems++;
	} else if (!h.a[0] && !h.aaaa[0]) {
		printf("%-*s        missing: no A or AAAA record\n", width, name);
		problems++;
	} else {
		printf("%-*s        ok: A %s, AAAA %s\n", width, name, h.a[0] ? h.a : "none",
		       h.aaaa[0] ? h.aaaa : "none");
	}
	for (size_t t = 0; t < NATTERCTL_DNS_N_TYPES; t++) {
		for (size_t i = 0; i < ans[t].n; i++) {
			const char *other = ans[t].srv[i].target;
			if (strcmp(other, target) == 0)
				continue;
			natterctl_dns_host(ub, other, &h);
			if (h.error[0] || h.a[0] || h.aaaa[0])
				continue;
			bool tls = t == LISTENER_C2S_TLS || t == LISTENER_S2S_TLS;
			printf("warning: %s points to %s., which has no A or AAAA record%s\n", owner[t],
			       other, tls ? ": direct TLS connections there fail" : "");
		}
	}
	free(ans);
	ub_ctx_delete(ub);
	if (problems)
		printf("\n%d problem%s\n", problems, problems == 1 ? "" : "s");
	else
		printf("\nall records ok\n");
	if (fflush(stdout) != 0)
		return natterctl_error("stdout: %s", strerror(errno));
	return problems ? 1 : 0;
}

/* dns --remote: where natterd would connect for a remote domain, found
 * the way natterd finds it (dns_resolve_s2s on an event loop). */
struct natterctl_dns_remote {
	int rc;
	bool done;
	const char *domain;
};

static void natterctl_dns_remote_done(void *arg, enum dns_status st, const struct dns_candidate *c,
				      size_t n)
{
	struct natterctl_dns_remote *r = arg;
	static const char *const what[] = {
		[DNS_OK] = "ok",
		[DNS_NO_SERVICE] = "no service: the domain does not federate (SRV target \".\")",
		[DNS_NOT_FOUND] = "not found: no address for the domain",
		[DNS_ERROR] = "error: the lookup failed or timed out",
	};

	printf("; server-to-server candidates for %s: %s\n", r->domain, what[st]);
	for (size_t i = 0; i < n; i++) {
		char text[INET6_ADDRSTRLEN];
		const void *a = c[i].addr.ss_family == AF_INET6
			? (const void *)&((const struct sockaddr_in6 *)&c[i].addr)->sin6_addr
			: (const void *)&((const struct sockaddr_in *)&c[i].addr)->sin_addr;
		inet_ntop(c[i].addr.ss_family, a, text, sizeof text);
		printf("%s %u %s %s ttl %u\n", c[i].host, (unsigned)c[i].port,
		       c[i].direct_tls ? "direct-tls" : "starttls", text, (unsigned)c[i].ttl);
	}
	r->rc = st == DNS_OK ? 0 : 1;
	r->done = true;
}

static int natterctl_dns_remote(const char *domain, const char *resolver, const char *timeout)
{
	char err[512];
	uv_loop_t uv;
	struct natterctl_dns_remote r = { .rc = 1, .domain = domain };

	if (uv_loop_init(&uv) != 0)
		return natterctl_error("cannot create an event loop");
	struct dns *d = dns_new(&uv, resolver, err, sizeof err);
	if (!d) {
		uv_loop_close(&uv);
		return natterctl_error("%s", err);
	}
	if (timeout)
		dns_set_timeout(d, (uint64_t)strtoul(timeout, NULL, 10) * 1000);
	dns_resolve_s2s(d, domain, natterctl_dns_remote_done, &r);
	/* The resolver's pipe keeps the loop alive; dns's own deadline
	 * bounds the wait. */
	while (!r.done)
		uv_run(&uv, UV_RUN_ONCE);
	dns_free(d);
	uv_run(&uv, UV_RUN_DEFAULT);
	uv_loop_close(&uv);
	if (fflush(stdout) != 0)
		return natterctl_error("stdout: %s", strerror(errno));
	return r.rc;
}

/* Runs "dns ARGS..." (argv starts after "dns"). */
static int natterctl_dns(struct natterctl *ctl, int argc, char **argv)
{
	const char *domain = NULL, *target = NULL, *remote = NULL, *timeout = NULL;
	const char *resolver = ctl->cfg.dns.resolver;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char **opt = strcmp(a, "--target") == 0     ? &target
				   : strcmp(a, "--resolver") == 0 ? &resolver
				   : strcmp(a, "--remote") == 0   ? &remote
				   : strcmp(a, "--timeout") == 0  ? &timeout
								  : NULL;
		if (opt) {
			if (++i == argc)
				return natterctl_error("dns: %s needs a value", a);
			*opt = argv[i];
		} else if (a[0] == '-' && a[1] != '\0') {
			return natterctl_error("dns: unknown option '%s'", a);
		} else if (domain) {
			return natterctl_error("dns: too many arguments");
		} else {
			domain = a;
		}
	}
	if (timeout && (strlen(timeout) > 4 || strspn(timeout, "0123456789") != strlen(timeout) ||
			atoi(timeout) < 1 ||
			atoi(timeout) > 3600))
		return natterctl_error("dns: --timeout takes 1..3600 seconds");
	if (remote && !domain)
		return natterctl_dns_remote(remote, resolver, timeout);
	if (!domain || remote || timeout)
		return natterctl_error("usage: natterctl dns DOMAIN [--target HOST] [--resolver "
				       "ADDR[@PORT]] | dns --remote DOMAIN [--resolver ADDR[@PORT]] "
				       "[--timeout SECONDS]");
	return natterctl_dns_check(ctl, domain, target, resolver);
}

/* Address ranges that do not reach the Internet (RFC 6890), and what
 * they mean for who can connect to a listener bound there. */
struct natterctl_range {
	int family;
	unsigned char net[16];
	int bits;
	bool whom;         /* reach follows who the port is for ("your users ...") */
	const char *reach;
};

static const struct natterctl_range natterctl_ranges[] = {
	{ AF_INET, { 127 }, 8, false, "nobody: loopback only (127.0.0.0/8)" },
	{ AF_INET, { 169, 254 }, 16, false, "the local link only (link-local 169.254.0.0/16)" },
	{ AF_INET, { 10 }, 8, true, "on the private network 10.0.0.0/8 only" },
	{ AF_INET, { 172, 16 }, 12, true, "on the private network 172.16.0.0/12 only" },
	{ AF_INET, { 192, 168 }, 16, true, "on the private network 192.168.0.0/16 only" },
	{ AF_INET, { 100, 64 }, 10, true,
	  "behind the same carrier-grade NAT only (shared address space 100.64.0.0/10)" },
	{ AF_INET6, { [15] = 1 }, 128, false, "nobody: loopback only (::1)" },
	{ AF_INET6, { 0xfe, 0x80 }, 10, false, "the local link only (link-local fe80::/10)" },
	{ AF_INET6, { 0xfc }, 7, true, "on the private network only (unique local fc00::/7)" },
};

static bool natterctl_prefix_match(const unsigned char *a, const unsigned char *net, int bits)
{
	int whole = bits / 8, rest = bits % 8;
	if (memcmp(a, net, (size_t)whole) != 0)
		return false;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return rest == 0 || (a[whole] & mask) == (net[whole] & mask);
}

/* The range of natterctl_ranges that holds address (an IPv4-mapped IPv6
 * address counts as its IPv4 address), or NULL: the unspecified address
 * or one that routes on the Internet. */
static const struct natterctl_range *natterctl_range_of(const char *address)
{
	static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
	unsigned char a[16];
	int family = AF_INET;

	if (inet_pton(AF_INET6, address, a) == 1) {
		family = AF_INET6;
		if (memcmp(a, mapped, sizeof mapped) == 0) {
			memmove(a, a + 12, 4);
			family = AF_INET;
		}
	} else if (inet_pton(AF_INET, address, a) != 1) {
		return NULL;
	}
	for (size_t i = 0; i < sizeof natterctl_ranges / sizeof *natterctl_ranges; i++) {
		const struct natterctl_range *r = &natterctl_ranges[i];
		if (r->family == family && natterctl_prefix_match(a, r->net, r->bits))
			return r;
	}
	return NULL;
}

/* The ports the configuration listens on, what each is for and who must
 * reach it: what to open in a firewall (DESIGN.md, "Ports"). */
static int natterctl_ports(const struct natterctl *ctl)
{
	static const char *const what[] = {
		[LISTENER_C2S] = "clients, STARTTLS (RFC 6120)",
		[LISTENER_C2S_TLS] = "clients, direct TLS (XEP-0368)",
		[LISTENER_S2S] = "other XMPP servers, STARTTLS (federation)",
		[LISTENER_S2S_TLS] = "other XMPP servers, direct TLS (federation)",
	};
	static const char *const who[] = {
		[LISTENER_C2S] = "your users",
		[LISTENER_C2S_TLS] = "your users",
		[LISTENER_S2S] = "the Internet",
		[LISTENER_S2S_TLS] = "the Internet",
	};
	static const char *const who_near[] = {
		[LISTENER_C2S] = "your users",
		[LISTENER_C2S_TLS] = "your users",
		[LISTENER_S2S] = "servers",
		[LISTENER_S2S_TLS] = "servers",
	};
	printf("%-6s %-5s %-40s %-45s %s\n", "PORT", "PROTO", "ADDRESS", "FOR", "OPEN TO");
	for (size_t i = 0; i < ctl->cfg.n_listeners; i++) {
		const struct config_listener *l = &ctl->cfg.listeners[i];
		const struct natterctl_range *r = natterctl_range_of(l->address);
		char reach[160];
		if (r == NULL)
			snprintf(reach, sizeof reach, "%s", who[l->type]);
		else
			snprintf(reach, sizeof reach, "%s%s%s", r->whom ? who_near[l->type] : "",
				 r->whom ? " " : "", r->reach);
		printf("%-6d %-5s %-40s %-45s %s\n", l->port, "tcp", l->address, what[l->type], reach);
	}
	if (fflush(stdout) != 0)
		return natterctl_error("stdout: %s", strerror(errno));
	return 0;
}

/* --- cert --- */

/* "in 364 days" or "EXPIRED 3 days ago", from now. */
static void natterctl_cert_left(time_t expires, char *out, size_t cap)
{
	time_t now = time(NULL);
	long days = (long)((expires > now ? expires - now : now - expires) / 86400);
	if (expires > now)
		snprintf(out, cap, "in %ld day%s", days, days == 1 ? "" : "s");
	else
		snprintf(out, cap, "EXPIRED %ld day%s ago", days, days == 1 ? "" : "s");
}

/* Prints one host's certificate. Returns 0, or 1 when it cannot be read
 * or has expired. */
static int natterctl_cert_host(const struct natterctl *ctl, const struct config_host *h)
{
	char path[1100], err[1200], left[64];
	struct certinfo ci;

	certinfo_path(&ctl->cfg, h, path, sizeof path);
	if (h->tls_cert == NULL && access(path, F_OK) != 0) {
		printf("%s: no certificate yet: natterd creates a self-signed one in %s when it "
		       "first starts\n", h->domain, path);
		return 1;
	}
	if (certinfo_read(path, &ci, err, sizeof err) != 0) {
		printf("%s: cannot read the certificate: %s\n", h->domain, err);
		return 1;
	}
	natterctl_cert_left(ci.expires, left, sizeof left);
	printf("%s: %s\n", h->domain, path);
	printf("  issuer      %s\n", ci.self_signed ? "itself (self-signed)"
					  : ci.issuer_cn[0] ? ci.issuer_cn : "(no CN)");
	printf("  subject CN  %s\n", ci.subject_cn[0] ? ci.subject_cn : "(none)");
	printf("  names       %s\n", ci.names[0] ? ci.names : "(no subjectAltName)");
	printf("  expires     %s (%s)\n", ci.not_after, left);
	printf("  SHA-256     %s\n", ci.sha256);
	printf("  SHA-1       %s\n", ci.sha1);
	return ci.expires > time(NULL) ? 0 : 1;
}

/* Each host's certificate (or one host's): what to compare when a client
 * shows a fingerprint, and when to renew. */
static int natterctl_cert(const struct natterctl *ctl, const char *arg)
{
	char domain[JID_PART_MAX + 1];
	int rc = 0;

	if (arg && (jid_prep_domain(arg, strlen(arg), domain, sizeof domain) <= 0 ||
		    !config_find_host(&ctl->cfg, domain)))
		return natterctl_error("%s is not a configured host", arg);
	for (size_t i = 0; i < ctl->cfg.n_hosts; i++) {
		const struct config_host *h = &ctl->cfg.hosts[i];
		if (arg && strcmp(h->domain, domain) != 0)
			continue;
		if (i > 0 && !arg)
			putchar('\n');
		rc |= natterctl_cert_host(ctl, h);
	}
	if (fflush(stdout) != 0)
		return natterctl_error("stdout: %s", strerror(errno));
	return rc;
}

/* Runs "user SUB ARGS..." (argv starts at SUB). */
static int natterctl_user(struct natterctl *ctl, int argc, char **argv)
{
	const char *args[3];
	int nargs = 0;

	if (argc < 1) {
		natterctl_usage(stderr);
		return 1;
	}
	const char *sub = argv[0];
	int bulk = strcmp(sub, "add-bulk") == 0;
	int takes_password = strcmp(sub, "add") == 0 || strcmp(sub, "passwd") == 0 || bulk;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (takes_password && strcmp(a, "--password-file") == 0) {
			if (++i == argc)
				return natterctl_error("--password-file needs a FILE");
			ctl->password_file = argv[i];
		} else if (takes_password && strncmp(a, "--password-file=", 16) == 0) {
			ctl->password_file = a + 16;
		} else if (a[0] == '-' && a[1] != '\0') {
			return natterctl_error("user %s: unknown option '%s'", sub, a);
		} else if (nargs == 3) {
			return natterctl_error("user %s: too many arguments", sub);
		} else {
			args[nargs++] = a;
		}
	}

	if (bulk) {
		if (nargs != 3)
			return natterctl_error("usage: natterctl user add-bulk PREFIX COUNT DOMAIN "
					       "[--password-file FILE]");
		return natterctl_user_add_bulk(ctl, args[0], args[1], args[2]);
	}
	if (takes_password) {
		if (nargs != 1)
			return natterctl_error("usage: natterctl user %s JID [--password-file FILE]",
					       sub);
		return natterctl_user_set(ctl, args[0], strcmp(sub, "add") == 0);
	}
	if (strcmp(sub, "del") == 0) {
		if (nargs != 1)
			return natterctl_error("usage: natterctl user del JID");
		return natterctl_user_del(ctl, args[0]);
	}
	if (nargs > 2)
		return natterctl_error("user %s: too many arguments", sub);
	if (strcmp(sub, "list") == 0) {
		if (nargs > 1)
			return natterctl_error("usage: natterctl user list [DOMAIN]");
		return natterctl_user_list(ctl, nargs ? args[0] : NULL);
	}
	return natterctl_error("unknown command 'user %s' (try --help)", sub);
}

static void natterctl_print_fast(void *arg, const char *key, const void *value, size_t len)
{
	(void)arg;
	struct buf b;
	buf_init(&b);
	fast_describe(value, len, &b);
	printf("%s\t%.*s\n", key, (int)b.len, b.data);
	buf_free(&b);
}

/* natterctl fast list JID | fast revoke JID [DEVICE]: on the store, with
 * natterd running or not; a revoked token fails its next login. */
static int natterctl_fast(struct natterctl *ctl, int argc, char **argv)
{
	static const char usage[] = "usage: natterctl fast list JID | fast revoke JID [DEVICE]";
	bool list = argc == 2 && strcmp(argv[0], "list") == 0;
	bool revoke = (argc == 2 || argc == 3) && strcmp(argv[0], "revoke") == 0;
	if (!list && !revoke)
		return natterctl_error("%s", usage);
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (natterctl_jid(&ctl->cfg, argv[1], local, domain) || natterctl_open(ctl))
		return 1;
	if (list) {
		int n = ctl->driver->map_list(ctl->st, domain, local, FAST_MAP, natterctl_print_fast,
					      NULL);
		return n < 0 ? natterctl_error("cannot read the store") : 0;
	}
	int rc = ctl->driver->map_del(ctl->st, domain, local, FAST_MAP, argc == 3 ? argv[2] : NULL);
	if (rc < 0)
		return natterctl_error("cannot write the store");
	if (rc == 1)
		return natterctl_error("%s holds no FAST token%s%s", argv[1],
				       argc == 3 ? " for device " : "", argc == 3 ? argv[2] : "");
	return 0;
}

/* natterctl mam index [--user JID]: the words of every archive (of one
 * account's), that no search has indexed yet, so that no first search
 * waits for them; natterd running or not. */
static int natterctl_mam_index(struct natterctl *ctl, int argc, char **argv)
{
	const char *user = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--user") == 0 && i + 1 < argc)
			user = argv[++i];
		else
			return natterctl_error("mam index: unknown argument '%s'", argv[i]);
	}
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (user != NULL && natterctl_jid(&ctl->cfg, user, local, domain))
		return 1;
	if (natterctl_open(ctl))
		return 1;
	long long n = ctl->driver->archive_index(ctl->st, user ? domain : NULL, user ? local : NULL);
	if (n < 0)
		return natterctl_error("cannot index the archive");
	printf("words of %lld archived message(s) indexed\n", n);
	return 0;
}

/* natterctl mam expire --before DATETIME [--user JID]: on the store, with
 * natterd running or not (SQLite's WAL lets both write). */
static int natterctl_mam(struct natterctl *ctl, int argc, char **argv)
{
	const char *before = NULL, *user = NULL;
	if (argc >= 1 && strcmp(argv[0], "index") == 0)
		return natterctl_mam_index(ctl, argc, argv);
	if (argc < 1 || strcmp(argv[0], "expire") != 0)
		return natterctl_error("usage: natterctl mam expire --before DATETIME [--user JID]\n"
				       "       natterctl mam index [--user JID]");
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--before") == 0 && i + 1 < argc)
			before = argv[++i];
		else if (strcmp(argv[i], "--user") == 0 && i + 1 < argc)
			user = argv[++i];
		else
			return natterctl_error("mam expire: unknown argument '%s'", argv[i]);
	}
	long long usec;
	if (before == NULL || datetime_parse(before, &usec) != 0)
		return natterctl_error("mam expire: --before needs an XEP-0082 date-time, "
				       "e.g. 2026-01-01T00:00:00Z");
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (user != NULL && natterctl_jid(&ctl->cfg, user, local, domain))
		return 1;
	if (natterctl_open(ctl))
		return 1;
	long long n = ctl->driver->archive_delete(ctl->st, user ? domain : NULL,
						  user ? local : NULL, usec);
	if (n < 0)
		return natterctl_error("cannot delete from the archive");
	printf("%lld archived message(s) deleted\n", n);
	return 0;
}

/* The public key verify uses: --key, else data_dir/journal.pub. */
static EVP_PKEY *natterctl_journal_pub(const struct natterctl *ctl, const char *key)
{
	char path[4096], err[1024];
	if (key == NULL)
		snprintf(path, sizeof path, "%s/journal.pub", ctl->cfg.data_dir);
	EVP_PKEY *pub = journal_key_load_public(key ? key : path, err, sizeof err);
	if (pub == NULL)
		natterctl_error("%s", err);
	return pub;
}

/* --host DOMAIN as a configured host, or NULL (message printed). */
static const struct config_host *natterctl_journal_host(const struct natterctl *ctl,
							 const char *arg)
{
	char domain[JID_PART_MAX + 1];
	if (jid_prep_domain(arg, strlen(arg), domain, sizeof domain) <= 0) {
		natterctl_error("'%s': invalid domain", arg);
		return NULL;
	}
	const struct config_host *h = config_find_host(&ctl->cfg, domain);
	if (h == NULL)
		natterctl_error("%s is not a configured host", domain);
	return h;
}

static int natterctl_journal_verify(struct natterctl *ctl, const char *host, const char *key)
{
	const struct config_host *only = NULL;
	if (host != NULL && (only = natterctl_journal_host(ctl, host)) == NULL)
		return 1;
	EVP_PKEY *pub = natterctl_journal_pub(ctl, key);
	if (pub == NULL)
		return 1;
	int rc = 0, checked = 0;
	for (size_t i = 0; i < ctl->cfg.n_hosts; i++) {
		const struct config_host *h = &ctl->cfg.hosts[i];
		if (only ? h != only : !h->journal.enabled)
			continue;
		char dir[4096];
		journal_dir(&ctl->cfg, h, dir, sizeof dir);
		printf("host %s:\n", h->domain);
		if (journal_verify(dir, h->domain, pub, stdout) != 0)
			rc = 1;
		checked++;
	}
	EVP_PKEY_free(pub);
	if (checked == 0)
		return natterctl_error("no host has journal.enabled (give --host DOMAIN)");
	return rc;
}

/* The host whose chat service is the domain of room (bare JID). */
static const struct config_host *natterctl_room_host(const struct config *cfg, const char *room)
{
	const char *at = strchr(room, '@');
	const char *domain = at ? at + 1 : room;
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		const struct config_host *h = &cfg->hosts[i];
		char svc[JID_PART_MAX + 16];
		snprintf(svc, sizeof svc, "conference.%s", h->domain);
		if (strcmp(h->muc.domain ? h->muc.domain : svc, domain) == 0)
			return h;
	}
	return NULL;
}

static int natterctl_journal_export(struct natterctl *ctl, int argc, char **argv)
{
	static const char usage[] = "usage: natterctl journal export (--user JID | --room JID) "
				    "[--from TIME] [--to TIME] [--format json|mbox] [--host DOMAIN]";
	const char *user = NULL, *room = NULL, *from = NULL, *to = NULL, *format = "json";
	const char *host = NULL;
	for (int i = 0; i < argc; i++) {
		const char **slot = strcmp(argv[i], "--user") == 0     ? &user
				    : strcmp(argv[i], "--room") == 0   ? &room
				    : strcmp(argv[i], "--from") == 0   ? &from
				    : strcmp(argv[i], "--to") == 0     ? &to
				    : strcmp(argv[i], "--format") == 0 ? &format
				    : strcmp(argv[i], "--host") == 0   ? &host
								       : NULL;
		if (slot == NULL || i + 1 == argc)
			return natterctl_error("%s", usage);
		*slot = argv[++i];
	}
	if ((user == NULL) == (room == NULL))
		return natterctl_error("%s", usage);
	enum journal_format fmt;
	if (strcmp(format, "json") == 0)
		fmt = JOURNAL_FORMAT_JSON;
	else if (strcmp(format, "mbox") == 0)
		fmt = JOURNAL_FORMAT_MBOX;
	else
		return natterctl_error("--format is json or mbox, not '%s'", format);
	struct journal_filter f = { .from_us = INT64_MIN, .to_us = INT64_MAX };
	if (from && journal_parse_time(from, &f.from_us) != 0)
		return natterctl_error("--from '%s' is not an ISO 8601 time", from);
	if (to && journal_parse_time(to, &f.to_us) != 0)
		return natterctl_error("--to '%s' is not an ISO 8601 time", to);
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1], bare[2 * JID_PART_MAX + 2];
	const struct config_host *h;
	if (user != NULL) {
		if (natterctl_jid(&ctl->cfg, user, local, domain) != 0)
			return 1;
		snprintf(bare, sizeof bare, "%s@%s", local, domain);
		f.user = bare;
		h = config_find_host(&ctl->cfg, domain);
	} else {
		struct jid j;
		if (jid_parse(&j, room, strlen(room)) != 0 || j.local[0] == '\0' ||
		    j.resource[0] != '\0')
			return natterctl_error("'%s' is not a room's bare JID", room);
		jid_format_bare(&j, bare, sizeof bare);
		f.room = bare;
		h = natterctl_room_host(&ctl->cfg, bare);
		if (h == NULL && host == NULL)
			return natterctl_error("%s is not on a configured host's chat service (give "
					       "--host DOMAIN)", bare);
	}
	if (host != NULL && (h = natterctl_journal_host(ctl, host)) == NULL)
		return 1;
	char dir[4096];
	journal_dir(&ctl->cfg, h, dir, sizeof dir);
	return journal_export(dir, &f, fmt, stdout, stderr);
}

static int natterctl_journal(struct natterctl *ctl, int argc, char **argv)
{
	static const char usage[] = "usage: natterctl journal verify [--host DOMAIN] [--key PUBFILE]"
				    " | export ... | pubkey";
	if (argc >= 1 && strcmp(argv[0], "verify") == 0) {
		const char *host = NULL, *key = NULL;
		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
				host = argv[++i];
			else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
				key = argv[++i];
			else
				return natterctl_error("%s", usage);
		}
		return natterctl_journal_verify(ctl, host, key);
	}
	if (argc >= 1 && strcmp(argv[0], "export") == 0)
		return natterctl_journal_export(ctl, argc - 1, argv + 1);
	if (argc == 1 && strcmp(argv[0], "pubkey") == 0) {
		char path[4096];
		snprintf(path, sizeof path, "%s/journal.pub", ctl->cfg.data_dir);
		FILE *f = fopen(path, "rb");
		if (f == NULL)
			return natterctl_error("%s: %s (natterd makes it when a journal is on)", path,
					       strerror(errno));
		char buf[4096];
		size_t n;
		while ((n = fread(buf, 1, sizeof buf, f)) > 0)
			fwrite(buf, 1, n, stdout);
		fclose(f);
		return 0;
	}
	return natterctl_error("%s", usage);
}

int main(int argc, char **argv)
{
	struct natterctl ctl = { 0 };
	const char *config_path = NULL;
	char err[1024];
	int i, rc;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			natterctl_usage(stdout);
			return 0;
		} else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (++i == argc)
				return natterctl_error("%s needs a CONFIG file", a);
			config_path = argv[i];
		} else if (strncmp(a, "--config=", 9) == 0) {
			config_path = a + 9;
		} else if (strcmp(a, "--") == 0) {
			i++;
			break;
		} else {
			natterctl_error("unknown option '%s'", a);
			natterctl_usage(stderr);
			return 1;
		}
	}
	for (int j = i; j < argc; j++) {
		if (strcmp(argv[j], "-h") == 0 || strcmp(argv[j], "--help") == 0) {
			natterctl_usage(stdout);
			return 0;
		}
	}
	if (i == argc) {
		natterctl_usage(stderr);
		return 1;
	}

	/* Storage may log; a tool's output is its result, so only problems. */
	log_set_level(LOG_WARN);
	if (config_path) {
		if (config_load(&ctl.cfg, config_path, err, sizeof err) < 0)
			return natterctl_error("%s", err);
	} else {
		config_defaults(&ctl.cfg);
	}

	if (strcmp(argv[i], "user") == 0) {
		rc = natterctl_user(&ctl, argc - i - 1, argv + i + 1);
	} else if (strcmp(argv[i], "ports") == 0) {
		rc = argc - i != 1 ? natterctl_error("usage: natterctl ports") : natterctl_ports(&ctl);
	} else if (strcmp(argv[i], "cert") == 0) {
		rc = argc - i > 2 ? natterctl_error("usage: natterctl cert [DOMAIN]")
				  : natterctl_cert(&ctl, argc - i == 2 ? argv[i + 1] : NULL);
	} else if (strcmp(argv[i], "s2s") == 0) {
		rc = argc - i != 1 ? natterctl_error("usage: natterctl s2s")
				   : natterctl_control(&ctl, "s2s");
	} else if (strcmp(argv[i], "memory") == 0) {
		rc = argc - i != 1 ? natterctl_error("usage: natterctl memory")
				   : natterctl_control(&ctl, "memory");
	} else if (strcmp(argv[i], "storage") == 0) {
		rc = argc - i != 1 ? natterctl_error("usage: natterctl storage")
				   : natterctl_control(&ctl, "storage");
	} else if (strcmp(argv[i], "room") == 0) {
		rc = natterctl_room(&ctl, argc - i - 1, argv + i + 1);
	} else if (strcmp(argv[i], "directory") == 0) {
		if (argc - i != 2 || strcmp(argv[i + 1], "refresh") != 0)
			rc = natterctl_error("usage: natterctl directory refresh");
		else
			rc = natterctl_control(&ctl, "directory refresh");
	} else if (strcmp(argv[i], "fast") == 0) {
		rc = natterctl_fast(&ctl, argc - i - 1, argv + i + 1);
	} else if (strcmp(argv[i], "mam") == 0) {
		rc = natterctl_mam(&ctl, argc - i - 1, argv + i + 1);
	} else if (strcmp(argv[i], "dns") == 0) {
		rc = natterctl_dns(&ctl, argc - i - 1, argv + i + 1);
	} else if (strcmp(argv[i], "journal") == 0) {
		rc = natterctl_journal(&ctl, argc - i - 1, argv + i + 1);
	} else {
		rc = natterctl_error("unknown command '%s' (try --help)", argv[i]);
	}
	if (ctl.st)
		ctl.driver->close(ctl.st);
	config_free(&ctl.cfg);
	return rc;
}
