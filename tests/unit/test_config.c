/* Tests of src/core/config.c: the defaults, a full file, the shipped
 * example, and each kind of error with its exact "file:line: message". */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"

/* Writes text to a new temporary file; path receives its name. */
static void write_temp(char *path, size_t cap, const char *text)
{
	snprintf(path, cap, "/tmp/natter-config-XXXXXX.yaml");
	int fd = mkstemps(path, 5);
	assert_true(fd >= 0);
	size_t n = strlen(text);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	close(fd);
}

/* Loads text and expects exactly "<tempfile>:line: message". */
static void expect_error(const char *text, int line, const char *message)
{
	char path[64], err[512], want[640];
	struct config cfg;
	write_temp(path, sizeof path, text);
	int rc = config_load(&cfg, path, err, sizeof err);
	unlink(path);
	if (rc == 0) {
		config_free(&cfg);
		fail_msg("loaded without error, expected: %s", message);
	}
	snprintf(want, sizeof want, "%s:%d: %s", path, line, message);
	assert_string_equal(err, want);
	/* On error the struct is already freed. */
	assert_null(cfg.hosts);
	assert_null(cfg.data_dir);
	assert_null(cfg.path);
}

static void load_ok(struct config *cfg, const char *text)
{
	char path[64], err[512];
	write_temp(path, sizeof path, text);
	int rc = config_load(cfg, path, err, sizeof err);
	unlink(path);
	if (rc != 0)
		fail_msg("config_load: %s", err);
	assert_string_equal(cfg->path, path);
}

static void assert_defaults_except_path(const struct config *cfg)
{
	assert_int_equal(cfg->log_level, LOG_INFO);
	assert_string_equal(cfg->data_dir, "./natter-data");
	assert_string_equal(cfg->storage, "sqlite");
	assert_int_equal(cfg->workers, 0);
	assert_int_equal(cfg->allow_plain, 1);
	assert_int_equal(cfg->scram_iterations, 4096);
	assert_int_equal(cfg->hide_version, 0);
	assert_int_equal(cfg->hide_os_version, 0);
	assert_int_equal(cfg->allow_registration, 0);
	assert_int_equal(cfg->registration_interval, 60);
	assert_int_equal(cfg->n_hosts, 1);
	assert_string_equal(cfg->hosts[0].domain, "localhost");
	assert_null(cfg->hosts[0].tls_cert);
	assert_null(cfg->hosts[0].tls_key);
	assert_int_equal(cfg->n_listeners, 2);
	assert_int_equal(cfg->listeners[0].type, LISTENER_C2S);
	assert_string_equal(cfg->listeners[0].address, "127.0.0.1");
	assert_int_equal(cfg->listeners[0].port, 5222);
	assert_int_equal(cfg->listeners[1].type, LISTENER_C2S_TLS);
	assert_string_equal(cfg->listeners[1].address, "127.0.0.1");
	assert_int_equal(cfg->listeners[1].port, 5223);
	assert_int_equal(cfg->limits.max_stanza_size, 262144);
	assert_int_equal(cfg->limits.max_depth, 64);
	assert_int_equal(cfg->limits.max_attributes, 64);
	assert_int_equal(cfg->limits.auth_timeout, 30);
	assert_int_equal(cfg->limits.idle_timeout, 300);
	assert_int_equal(cfg->limits.ping_timeout, 30);
	assert_int_equal(cfg->limits.max_roster_items, 1000);
	assert_int_equal(cfg->registrations_per_hour, 30);
	assert_int_equal(cfg->limits.max_auth_failures, 3);
	assert_int_equal(cfg->limits.auth_failures_per_address, 10);
	assert_int_equal(cfg->limits.auth_failures_per_account, 20);
	assert_int_equal(cfg->limits.auth_failure_window, 600);
	assert_int_equal(cfg->limits.max_unauthenticated_per_address, 20);
	assert_int_equal(cfg->limits.ipv6_prefix, 56);
}

static void test_defaults(void **state)
{
	(void)state;
	struct config cfg;
	config_defaults(&cfg);
	assert_null(cfg.path);
	assert_defaults_except_path(&cfg);
	assert_non_null(config_find_host(&cfg, "localhost"));
	assert_null(config_find_host(&cfg, "example.org"));
	config_free(&cfg);
	config_free(&cfg); /* harmless twice */
}

static void test_empty_file_is_defaults(void **state)
{
	(void)state;
	static const char *const texts[] = { "", "# only a comment\n\n", "---\n", "---\n...\n" };
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		struct config cfg;
		load_ok(&cfg, texts[i]);
		assert_defaults_except_path(&cfg);
		config_free(&cfg);
	}
}

static void test_full_file(void **state)
{
	(void)state;
	char cert[64], key[64], text[2048];
	struct config cfg;
	write_temp(cert, sizeof cert, "not checked here\n");
	write_temp(key, sizeof key, "not checked here\n");
	snprintf(text, sizeof text,
		 "log_level: debug\n"
		 "data_dir: /var/lib/natter\n"
		 "storage: sqlite\n"
		 "workers: 4\n"
		 "allow_plain: false\n"
		 "scram_iterations: 10000\n"
		 "hide_version: true\n"
		 "hide_os_version: yes\n"
		 "allow_registration: on\n"
		 "registration_interval: 0\n"
		 "hosts:\n"
		 "  - domain: Example.COM\n"
		 "    tls_cert: %s\n"
		 "    tls_key: '%s'\n"
		 "  - domain: localhost\n"
		 "listeners:\n"
		 "  - type: c2s\n"
		 "    address: \"::\"\n"
		 "    port: 5222\n"
		 "  - type: c2s_tls\n"
		 "    address: 0.0.0.0\n"
		 "  - {type: c2s, port: 15222}\n"
		 "limits:\n"
		 "  max_stanza_size: 65536\n"
		 "  max_depth: 32\n"
		 "  max_attributes: 16\n"
		 "  auth_timeout: 10\n"
		 "  idle_timeout: 600\n"
		 "  ping_timeout: 20\n"
		 "  max_roster_items: 500\n",
		 cert, key);
	load_ok(&cfg, text);
	unlink(cert);
	unlink(key);

	assert_int_equal(cfg.log_level, LOG_DEBUG);
	assert_string_equal(cfg.data_dir, "/var/lib/natter");
	assert_string_equal(cfg.storage, "sqlite");
	assert_int_equal(cfg.workers, 4);
	assert_int_equal(cfg.allow_plain, 0);
	assert_int_equal(cfg.scram_iterations, 10000);
	assert_int_equal(cfg.hide_version, 1);
	assert_int_equal(cfg.hide_os_version, 1);
	assert_int_equal(cfg.allow_registration, 1);
	assert_int_equal(cfg.registration_interval, 0);

	assert_int_equal(cfg.n_hosts, 2);
	assert_string_equal(cfg.hosts[0].domain, "example.com");
	assert_string_equal(cfg.hosts[0].tls_cert, cert);
	assert_string_equal(cfg.hosts[0].tls_key, key);
	assert_string_equal(cfg.hosts[1].domain, "localhost");
	assert_null(cfg.hosts[1].tls_cert);
	assert_ptr_equal(config_find_host(&cfg, "example.com"), &cfg.hosts[0]);
	assert_ptr_equal(config_find_host(&cfg, "localhost"), &cfg.hosts[1]);
	assert_null(config_find_host(&cfg, "Example.COM")); /* callers normalise */

	assert_int_equal(cfg.n_listeners, 3);
	assert_int_equal(cfg.listeners[0].type, LISTENER_C2S);
	assert_string_equal(cfg.listeners[0].address, "::");
	assert_int_equal(cfg.listeners[0].port, 5222);
	assert_int_equal(cfg.listeners[1].type, LISTENER_C2S_TLS);
	assert_string_equal(cfg.listeners[1].address, "0.0.0.0");
	assert_int_equal(cfg.listeners[1].port, 5223); /* default for c2s_tls */
	assert_string_equal(cfg.listeners[2].address, "127.0.0.1");
	assert_int_equal(cfg.listeners[2].port, 15222);

	assert_int_equal(cfg.limits.max_stanza_size, 65536);
	assert_int_equal(cfg.limits.max_depth, 32);
	assert_int_equal(cfg.limits.max_attributes, 16);
	assert_int_equal(cfg.limits.auth_timeout, 10);
	assert_int_equal(cfg.limits.idle_timeout, 600);
	assert_int_equal(cfg.limits.ping_timeout, 20);
	assert_int_equal(cfg.limits.max_roster_items, 500);
	config_free(&cfg);
}

static void test_partial_sections_keep_defaults(void **state)
{
	(void)state;
	struct config cfg;
	load_ok(&cfg, "limits:\n  max_depth: 10\nallow_plain: no\n");
	assert_int_equal(cfg.limits.max_depth, 10);
	assert_int_equal(cfg.limits.max_stanza_size, 262144);
	assert_int_equal(cfg.allow_plain, 0);
	assert_int_equal(cfg.n_hosts, 1);
	assert_int_equal(cfg.n_listeners, 2);
	config_free(&cfg);
}

static void test_shipped_example(void **state)
{
	(void)state;
	const char *src = getenv("NATTER_SOURCE_DIR");
	char path[1024], err[512];
	struct config cfg;
	if (!src)
		skip();
	snprintf(path, sizeof path, "%s/etc/natter.yaml", src);
	if (config_load(&cfg, path, err, sizeof err) != 0)
		fail_msg("%s", err);
	/* The example spells out the defaults. */
	assert_defaults_except_path(&cfg);
	config_free(&cfg);
}

static void test_missing_file(void **state)
{
	(void)state;
	struct config cfg;
	char err[512];
	assert_int_equal(config_load(&cfg, "/nonexistent/natter.yaml", err, sizeof err), -1);
	assert_string_equal(err, "/nonexistent/natter.yaml: cannot open: No such file or directory");
	assert_null(cfg.hosts);
}

static void test_syntax_errors(void **state)
{
	(void)state;
	expect_error("workers: 1\n  bad: 2\n", 2,
		     "YAML syntax error: mapping values are not allowed in this context");
	expect_error("# indented with a tab:\n\tworkers: 1\n", 2,
		     "YAML syntax error: found character that cannot start any token "
		     "while scanning for the next token");
	expect_error("data_dir: \"unclosed\n\n", 3,
		     "YAML syntax error: found unexpected end of stream while scanning a "
		     "quoted scalar (from line 1)");
}

static void test_unknown_keys(void **state)
{
	(void)state;
	expect_error("workers: 1\nlistener:\n  - type: c2s\n", 2, "unknown key 'listener'");
	expect_error("hosts:\n  - domain: localhost\n    listeners: []\n", 3,
		     "unknown key 'listeners' in a hosts entry");
	expect_error("limits:\n  max_depht: 3\n", 2, "unknown key 'max_depht' in limits");
	expect_error("listeners:\n  - type: c2s\n    adress: ::1\n", 3,
		     "unknown key 'adress' in a listeners entry");
}

static void test_duplicate_key(void **state)
{
	(void)state;
	expect_error("workers: 1\nlog_level: info\nworkers: 2\n", 3,
		     "duplicate key 'workers' (first on line 1)");
	expect_error("limits:\n  max_depth: 3\n  max_depth: 4\n", 3,
		     "duplicate key 'max_depth' (first on line 2)");
}

static void test_wrong_types(void **state)
{
	(void)state;
	expect_error("log_level: info\ndata_dir: x\nworkers: many\n", 3,
		     "'workers' must be an integer");
	expect_error("workers: \"4\"\n", 1, "'workers' must be an integer");
	expect_error("workers: 4.5\n", 1, "'workers' must be an integer");
	expect_error("workers: [4]\n", 1, "'workers' must be an integer");
	expect_error("workers: 99999999999999999999999\n", 1, "'workers' must be an integer");
	expect_error("allow_plain: maybe\n", 1, "'allow_plain' must be true or false");
	expect_error("allow_registration: \"yes\"\n", 1,
		     "'allow_registration' must be true or false");
	expect_error("hide_version: 1\n", 1, "'hide_version' must be true or false");
	expect_error("data_dir:\n  a: b\n", 2, "'data_dir' must be a string");
	expect_error("data_dir:\n", 1, "'data_dir' must not be empty");
	expect_error("hosts: localhost\n", 1, "'hosts' must be a list");
	expect_error("limits: 5\n", 1, "'limits' must be a mapping of keys");
	expect_error("hosts:\n  - localhost\n", 2, "each entry of 'hosts' must be a mapping of keys");
	expect_error("- workers\n", 1, "the file must be a mapping of keys");
}

static void test_ranges(void **state)
{
	(void)state;
	expect_error("listeners:\n  - type: c2s\n    port: 70000\n", 3,
		     "'port' must be between 1 and 65535");
	expect_error("listeners:\n  - type: c2s\n    port: 0\n", 3,
		     "'port' must be between 1 and 65535");
	expect_error("scram_iterations: 1000\n", 1,
		     "'scram_iterations' must be between 4096 and 10000000");
	expect_error("workers: -1\n", 1, "'workers' must be between 0 and 1024");
	expect_error("registration_interval: -5\n", 1,
		     "'registration_interval' must be between 0 and 604800");
	expect_error("limits:\n  max_stanza_size: 100\n", 2,
		     "'max_stanza_size' must be between 10000 and 16777216");
	expect_error("registrations_per_hour: -1\n", 1,
		     "'registrations_per_hour' must be between 0 and 1000000");
	expect_error("limits:\n  auth_timeout: 5\n  ipv6_prefix: 16\n", 3,
		     "'ipv6_prefix' must be between 32 and 128");
	expect_error("limits:\n  max_auth_failures: 0\n", 2,
		     "'max_auth_failures' must be between 1 and 100");
}

static void test_enums(void **state)
{
	(void)state;
	expect_error("log_level: verbose\n", 1,
		     "unknown log_level 'verbose' (allowed: error, warn, info, debug)");
	expect_error("listeners:\n  - type: bosh\n", 2,
		     "unknown type 'bosh' (allowed: c2s, c2s_tls, s2s, s2s_tls)");
	/* An s2s listener needs federation on. */
	expect_error("listeners:\n  - type: s2s\n", 1,
		     "an s2s listener needs federation on (s2s: {enabled: true})");
	expect_error("storage: postgres\n", 1, "unknown storage 'postgres' (allowed: sqlite)");
}

static void test_hosts(void **state)
{
	(void)state;
	char cert[64], text[512];
	expect_error("hosts:\n"
		     "  - domain: localhost\n"
		     "  - domain: a.example\n"
		     "  - domain: A.Example\n",
		     4, "duplicate domain 'a.example'");
	expect_error("hosts: []\n", 1, "'hosts' must list at least one entry");
	expect_error("hosts:\n  - {}\n", 2, "a hosts entry needs a 'domain'");

	write_temp(cert, sizeof cert, "cert\n");
	snprintf(text, sizeof text, "hosts:\n  - domain: localhost\n    tls_cert: %s\n", cert);
	expect_error(text, 3, "tls_cert given without tls_key");
	snprintf(text, sizeof text, "hosts:\n  - domain: localhost\n    tls_key: %s\n", cert);
	expect_error(text, 3, "tls_key given without tls_cert");
	snprintf(text, sizeof text,
		 "hosts:\n  - domain: localhost\n    tls_cert: /nonexistent/cert.pem\n"
		 "    tls_key: %s\n", cert);
	expect_error(text, 3,
		     "cannot read tls_cert '/nonexistent/cert.pem': No such file or directory");
	unlink(cert);
}

static void test_listeners(void **state)
{
	(void)state;
	expect_error("listeners:\n  - type: c2s\n    address: localhost\n", 3,
		     "'address' must be a numeric IPv4 or IPv6 address, not 'localhost'");
	expect_error("listeners:\n  - type: c2s\n    address: 300.1.1.1\n", 3,
		     "'address' must be a numeric IPv4 or IPv6 address, not '300.1.1.1'");
	expect_error("listeners:\n  - address: ::1\n", 2, "a listeners entry needs a 'type'");
	expect_error("listeners: []\n", 1, "'listeners' must list at least one entry");
	expect_error("listeners:\n"
		     "  - type: c2s\n"
		     "    address: \"::1\"\n"
		     "  - type: c2s_tls\n"
		     "    address: \"0:0::1\"\n"
		     "    port: 5222\n",
		     6, "duplicate listener 0:0::1 port 5222");
}

static void test_directory_host(void **state)
{
	(void)state;
	struct config cfg;
	load_ok(&cfg, "hosts:\n"
		      "  - domain: localhost\n"
		      "  - domain: Example.COM\n"
		      "    auth: ldap\n"
		      "    ldap:\n"
		      "      uri: \"ldap://127.0.0.1:1 ldaps://127.0.0.1:2\"\n"
		      "      base_dn: \"ou=people,dc=example,dc=com\"\n"
		      "      locked_filter: \"(employeeType=disabled)\"\n"
		      "      groups:\n"
		      "        - {dn: \"cn=staff,dc=example,dc=com\", name: Staff}\n"
		      "        - {dn: \"cn=ops,dc=example,dc=com\"}\n"
		      "      vcard: {photo: ~, read_only: false}\n"
		      "    kerberos:\n"
		      "      realms: \"EXAMPLE.COM CORP.EXAMPLE.COM\"\n");
	assert_int_equal(cfg.n_hosts, 2);
	assert_int_equal(cfg.hosts[0].auth, HOST_AUTH_INTERNAL);
	const struct config_host *h = &cfg.hosts[1];
	assert_string_equal(h->domain, "example.com");
	assert_int_equal(h->auth, HOST_AUTH_LDAP);
	assert_string_equal(h->ldap.user_filter, "(&(objectClass=person)(uid=%u))");
	assert_int_equal(h->ldap.starttls, 1);
	assert_int_equal(h->ldap.verify, 1);
	assert_int_equal(h->ldap.timeout, 5);
	assert_int_equal(h->ldap.pool_size, 4);
	assert_int_equal(h->ldap.n_groups, 2);
	assert_string_equal(h->ldap.groups[0].name, "Staff");
	assert_null(h->ldap.groups[1].name);
	assert_null(h->ldap.vcard.photo);
	assert_string_equal(h->ldap.vcard.fn, "cn");
	assert_int_equal(h->ldap.vcard.read_only, 0);
	assert_null(h->kerberos.keytab);
	assert_string_equal(h->kerberos.service, "xmpp");
	assert_string_equal(h->kerberos.realms, "EXAMPLE.COM CORP.EXAMPLE.COM");
	config_free(&cfg);
}

static void test_directory_errors(void **state)
{
	(void)state;
	expect_error("hosts:\n  - domain: a.test\n    auth: ldap\n", 3,
		     "auth: ldap needs ldap with a 'uri' and a 'base_dn'");
	expect_error("hosts:\n  - domain: a.test\n    ldap: {uri: \"ldap://x\", base_dn: o}\n", 3,
		     "'ldap' is given but 'auth' is not ldap");
	expect_error("hosts:\n  - domain: a.test\n    auth: ldap\n"
		     "    ldap: {uri: \"http://x\", base_dn: o}\n",
		     4, "'http://x' is not an ldap://, ldaps:// or ldapi:// URI");
	expect_error("hosts:\n  - domain: a.test\n    auth: ldap\n"
		     "    ldap:\n      uri: \"ldap://x\"\n      base_dn: o\n"
		     "      user_filter: \"(uid=alice)\"\n",
		     7, "user_filter must contain %u");
	expect_error("hosts:\n  - domain: a.test\n    auth: ldap\n"
		     "    ldap:\n      uri: \"ldap://x\"\n      base_dn: o\n"
		     "      bind_password: s\n",
		     7, "a bind password needs a bind_dn");
	expect_error("hosts:\n  - domain: a.test\n    auth: sql\n", 3,
		     "unknown auth 'sql' (allowed: internal, ldap)");
}

static void test_yaml_features_refused(void **state)
{
	(void)state;
	expect_error("data_dir: &d /tmp\nstorage: *d\n", 2, "YAML aliases are not supported");
	expect_error("workers: 1\n---\nworkers: 2\n", 2, "only one YAML document is allowed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_directory_host),
		cmocka_unit_test(test_directory_errors),
		cmocka_unit_test(test_empty_file_is_defaults),
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_partial_sections_keep_defaults),
		cmocka_unit_test(test_shipped_example),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_unknown_keys),
		cmocka_unit_test(test_duplicate_key),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_enums),
		cmocka_unit_test(test_hosts),
		cmocka_unit_test(test_listeners),
		cmocka_unit_test(test_yaml_features_refused),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
