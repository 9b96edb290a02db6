/* One-shot parsing of a stored element (a roster item, an offline
 * message) back into a tree, with the same parser and limits as streams. */
#ifndef NATTER_XML_PARSE_H
#define NATTER_XML_PARSE_H

#include <stddef.h>

#include "xml/xml.h"

/* Parses the single element in data (as if inside a jabber:client
 * stream) into a tree allocated in a. Returns NULL if data is not exactly
 * one well-formed element. */
struct xml_node *xml_parse_element(struct arena *a, const char *data, size_t len);

/* Deep copy of n into arena a. */
struct xml_node *xml_copy(struct arena *a, const struct xml_node *n);

#endif
