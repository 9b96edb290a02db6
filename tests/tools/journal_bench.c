/* journal_bench: the journal's costs, measured on this machine's disk.
 *
 *   journal_bench DIR [N]
 *
 * 1. encode: building one message record with its chain hash (CPU only);
 * 2. submit: what a loop pays to hand a message to the writer (queue);
 * 3. write: N messages through a real writer thread (group commit with
 *    fdatasync) until all are on disk, with the batches it took;
 * 4. verify: natterctl journal verify's walk over those N records.
 * DIR must not exist (it is made, with data_dir DIR). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/log.h"
#include "core/server.h"
#include "journal/journal.h"
#include "journal/journal_writer.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct journal_msg *message(int i)
{
	struct journal_msg *m = calloc(1, sizeof *m);
	char body[160];
	snprintf(body, sizeof body, "message %d: a typical chat line of about a hundred "
		 "bytes, to weigh what one record costs", i);
	m->time_us = journal_writer_now_us();
	m->how = strdup("sent");
	m->from = strdup("alice@localhost/laptop");
	m->to = strdup("bob@localhost/phone");
	m->type = strdup("chat");
	m->id = strdup("id-0123456789");
	m->body = strdup(body);
	return m;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: journal_bench DIR [N]\n");
		return 2;
	}
	int n = argc > 2 ? atoi(argv[2]) : 100000;
	log_set_level(LOG_WARN);

	/* 1. encode */
	struct buf b;
	buf_init(&b);
	uint8_t chain[JOURNAL_HASH_LEN] = { 0 };
	struct journal_msg *m = message(0);
	double t0 = now_s();
	for (int i = 0; i < n; i++) {
		b.len = 0;
		journal_record_message(&b, (uint64_t)i + 1, m, chain);
	}
	double encode = now_s() - t0;
	printf("encode: %d records of %zu bytes: %.2f us/record\n", n, b.len, encode * 1e6 / n);
	journal_msg_free(m);
	buf_free(&b);

	/* 2 and 3: a real writer */
	struct config cfg;
	config_defaults(&cfg);
	free(cfg.data_dir);
	cfg.data_dir = strdup(argv[1]);
	cfg.hosts[0].journal.enabled = 1;
	cfg.hosts[0].journal.queue_size = n + 1;
	struct server srv;
	memset(&srv, 0, sizeof srv);
	srv.cfg = &cfg;
	char err[512];
	if (journal_writer_start_all(&srv, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	struct journal_writer *w = journal_writer_of(&srv, "localhost");
	struct journal_msg **msgs = malloc(sizeof *msgs * (size_t)n);
	for (int i = 0; i < n; i++)
		msgs[i] = message(i);
	t0 = now_s();
	for (int i = 0; i < n; i++)
		if (journal_writer_submit(w, msgs[i]) != OK)
			return 1;
	double submit = now_s() - t0;
	journal_writer_stop_all(&srv); /* drains: every record written and fsynced */
	double written = now_s() - t0;
	free(msgs);
	printf("submit: %.2f us/message on the loop\n", submit * 1e6 / n);
	printf("write:  %d messages on disk (fdatasync'd) in %.3f s: %.0f messages/s, "
	       "%.2f us/message\n", n, written, n / written, written * 1e6 / n);

	/* 4. verify */
	char dir[4096], pub_path[4200];
	journal_dir(&cfg, &cfg.hosts[0], dir, sizeof dir);
	snprintf(pub_path, sizeof pub_path, "%s/journal.pub", argv[1]);
	EVP_PKEY *pub = journal_key_load_public(pub_path, err, sizeof err);
	if (pub == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	FILE *devnull = fopen("/dev/null", "w");
	t0 = now_s();
	int rc = journal_verify(dir, "localhost", pub, devnull);
	double verify = now_s() - t0;
	fclose(devnull);
	printf("verify: %d records in %.3f s: %.0f records/s (%s)\n", n, verify, n / verify,
	       rc == 0 ? "intact" : "FAILED");
	EVP_PKEY_free(pub);
	config_free(&cfg);
	return rc;
}
