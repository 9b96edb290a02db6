/* The unit tests' own helpers for a SQLite store in a temporary
 * directory (test_storage.c, test_pending.c, test_storeq.c). */
#ifndef NATTER_TEST_STORE_FILES_H
#define NATTER_TEST_STORE_FILES_H

#include <stdio.h>
#include <unistd.h>

/* Removes the store's files (the database, its WAL and shared memory)
 * from data_dir. */
static inline void store_files_remove(const char *data_dir)
{
	static const char *const files[] = { "natter.db", "natter.db-wal", "natter.db-shm" };
	char path[256];
	for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
		snprintf(path, sizeof path, "%s/%s", data_dir, files[i]);
		unlink(path);
	}
}

/* Removes the store's files, data_dir, and the directory dir above it. */
static inline void store_dir_remove(const char *data_dir, const char *dir)
{
	store_files_remove(data_dir);
	rmdir(data_dir);
	rmdir(dir);
}

#endif
