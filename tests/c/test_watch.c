/* Store watches through the C ABI: every operation's event with its committed value, unwatch,
 * lag notices, change kinds of ordinary messages, bad arguments, and a watcher on a local://
 * directory seeing another engine's writes. */
#include <string.h>
#include <unistd.h>

#include "check.h"

/* Receives the next item (waiting up to 10 s) and checks that it is the change `kind` of `key`
 * carrying `value` (MessagePack; `value_len` 0: an empty payload). */
static void expect_change(HbMailbox *mb, HbChangeKind kind, const char *key, const uint8_t *value,
                          size_t value_len) {
  HbMessage *m = NULL;
  OK(hb_mailbox_recv(mb, 10000, &m));
  CHECK(hb_message_change_kind(m) == kind);
  CHECK(hb_message_lagged(m) == 0);
  const uint8_t *p = NULL;
  size_t n = 0;
  OK(hb_message_topic(m, &p, &n));
  CHECK(n == strlen(key) && memcmp(p, key, n) == 0);
  OK(hb_message_payload(m, &p, &n));
  CHECK(n == value_len && (n == 0 || memcmp(p, value, n) == 0));
  hb_message_free(m);
}

static void expect_empty(HbMailbox *mb) {
  HbMessage *m = NULL;
  CHECK_STATUS(hb_mailbox_try_recv(mb, &m), HB_EMPTY);
  CHECK(m == NULL);
}

static void test_every_operation(HbEngine *e) {
  HbMailbox *mb = NULL;
  OK(hb_mailbox_new(e, &mb));
  OK(hb_mailbox_watch(mb, S("room:")));
  OK(hb_mailbox_watch(mb, S("room:"))); /* already watched: fine */

  /* hb_set: the MessagePack bytes as committed. */
  const uint8_t fixmap[] = {0x81, 0xa1, 'n', 0x01}; /* {"n": 1} */
  OK(hb_set(e, S("room:a"), fixmap, sizeof fixmap, 0));
  expect_change(mb, HB_CHANGE_SET, "room:a", fixmap, sizeof fixmap);
  OK(hb_set_str(e, S("room:b"), S("ann"), 0));
  const uint8_t ann[] = {0xa3, 'a', 'n', 'n'};
  expect_change(mb, HB_CHANGE_SET, "room:b", ann, sizeof ann);
  OK(hb_set_int(e, S("room:n"), 7, 0));
  const uint8_t seven[] = {0x07};
  expect_change(mb, HB_CHANGE_SET, "room:n", seven, 1);

  /* Outside the prefix: nothing. */
  OK(hb_set_str(e, S("other"), S("x"), 0));
  OK(hb_set_str(e, S("roo"), S("x"), 0));
  expect_empty(mb);

  /* incr and decr: the counter's new value. */
  int64_t n = 0;
  OK(hb_incr(e, S("room:n"), 5, &n));
  CHECK(n == 12);
  const uint8_t twelve[] = {0x0c};
  expect_change(mb, HB_CHANGE_INCR, "room:n", twelve, 1);
  OK(hb_incr(e, S("room:n"), -20, &n));
  CHECK(n == -8);
  const uint8_t minus_eight[] = {0xf8}; /* negative fixint */
  expect_change(mb, HB_CHANGE_INCR, "room:n", minus_eight, 1);
  OK(hb_incr(e, S("room:fresh"), 1000, &n));
  const uint8_t thousand[] = {0xcd, 0x03, 0xe8}; /* uint 16 */
  expect_change(mb, HB_CHANGE_INCR, "room:fresh", thousand, sizeof thousand);

  /* delete: an event for a live key only, with an empty payload. */
  bool existed = false;
  OK(hb_delete(e, S("room:a"), &existed));
  CHECK(existed);
  OK(hb_delete(e, S("room:a"), &existed));
  CHECK(!existed);
  expect_change(mb, HB_CHANGE_DELETE, "room:a", NULL, 0);
  expect_empty(mb);

  /* expiry: the reaper reclaims the key and reports it (bounded by the 10 s receive). */
  OK(hb_set_str(e, S("room:session"), S("s"), 1));
  const uint8_t s[] = {0xa1, 's'};
  expect_change(mb, HB_CHANGE_SET, "room:session", s, sizeof s);
  expect_change(mb, HB_CHANGE_EXPIRE, "room:session", NULL, 0);

  /* clear: one event, empty key and payload. */
  OK(hb_clear(e));
  expect_change(mb, HB_CHANGE_CLEAR, "", NULL, 0);
  expect_empty(mb);
  int64_t v = 0;
  CHECK_STATUS(hb_get_int(e, S("room:n"), &v), HB_NOT_FOUND);

  /* An empty prefix (NULL, 0) watches every key. */
  HbMailbox *all = NULL;
  OK(hb_mailbox_new(e, &all));
  OK(hb_mailbox_watch(all, NULL, 0));
  OK(hb_set_int(e, S("anything"), 1, 0));
  const uint8_t one[] = {0x01};
  expect_change(all, HB_CHANGE_SET, "anything", one, 1);
  expect_empty(mb);
  hb_mailbox_free(all);

  /* unwatch: no more events; queued ones stay. */
  OK(hb_set_int(e, S("room:q"), 2, 0));
  OK(hb_mailbox_unwatch(mb, S("room:")));
  OK(hb_mailbox_unwatch(mb, S("room:"))); /* not watched: fine */
  OK(hb_set_int(e, S("room:z"), 3, 0));
  OK(hb_incr(e, S("room:z"), 1, &n));
  OK(hb_delete(e, S("room:z"), NULL));
  const uint8_t two[] = {0x02};
  expect_change(mb, HB_CHANGE_SET, "room:q", two, 1);
  expect_empty(mb);

  /* Watches and subscriptions share the mailbox; a published message is no change. */
  OK(hb_mailbox_watch(mb, S("room:")));
  OK(hb_mailbox_subscribe(mb, S("room:*")));
  OK(hb_publish(e, S("room:lobby"), S("raw"), NULL));
  HbMessage *m = NULL;
  OK(hb_mailbox_recv(mb, 1000, &m));
  CHECK(hb_message_change_kind(m) == HB_CHANGE_NONE);
  hb_message_free(m);
  hb_mailbox_free(mb);
}

/* A watcher that falls behind: the mailbox keeps its bound, then one lag notice counts the rest. */
static void test_lag(HbEngine *e) {
  HbMailbox *mb = NULL;
  OK(hb_mailbox_new(e, &mb)); /* 1024 messages */
  OK(hb_mailbox_watch(mb, S("hot")));
  int64_t n = 0;
  for (int i = 0; i < 1500; i++) OK(hb_incr(e, S("hot"), 1, &n));
  int events = 0;
  uint64_t lagged = 0;
  int notices = 0;
  for (int i = 0; i < 3000; i++) {
    HbMessage *m = NULL;
    HbStatus st = hb_mailbox_try_recv(mb, &m);
    if (st == HB_EMPTY) break;
    OK(st);
    if (hb_message_lagged(m) > 0) {
      CHECK(hb_message_change_kind(m) == HB_CHANGE_NONE);
      lagged += hb_message_lagged(m);
      notices++;
    } else {
      CHECK(hb_message_change_kind(m) == HB_CHANGE_INCR);
      events++;
    }
    hb_message_free(m);
  }
  CHECK(events == 1024);
  CHECK(notices == 1 && lagged == 1500 - 1024);
  hb_mailbox_free(mb);
}

static void test_bad_input(HbEngine *e) {
  HbMailbox *mb = NULL;
  OK(hb_mailbox_new(e, &mb));
  CHECK_STATUS(hb_mailbox_watch(NULL, S("a")), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_mailbox_unwatch(NULL, S("a")), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_mailbox_watch(mb, NULL, 3), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_mailbox_unwatch(mb, NULL, 3), HB_NULL_ARGUMENT);
  const uint8_t invalid_utf8[] = {'k', 0xc3, 0x28};
  CHECK_STATUS(hb_mailbox_watch(mb, invalid_utf8, sizeof invalid_utf8), HB_INVALID_UTF8);
  char err[256];
  CHECK(hb_last_error(err, sizeof err) > 0 && strstr(err, "prefix") != NULL);
  CHECK_STATUS(hb_mailbox_unwatch(mb, invalid_utf8, sizeof invalid_utf8), HB_INVALID_UTF8);
  /* A prefix longer than any key can be (4 KiB): the key error. */
  static uint8_t huge[5000];
  memset(huge, 'k', sizeof huge);
  CHECK_STATUS(hb_mailbox_watch(mb, huge, sizeof huge), HB_INVALID_KEY);
  CHECK(hb_message_change_kind(NULL) == HB_CHANGE_NONE);
  /* Nothing was watched by the failed calls. */
  OK(hb_set_int(e, S("kkkk"), 1, 0));
  OK(hb_set_int(e, S("k\xc3\xa9"), 1, 0));
  expect_empty(mb);
  OK(hb_mailbox_close(mb));
  CHECK_STATUS(hb_mailbox_watch(mb, S("a")), HB_CLOSED);
  hb_mailbox_free(mb);
}

/* local://: a watcher on one engine sees the writes of another on the same directory (as it would
 * another process's). */
static void test_local_backend(void) {
  char dir[] = "/tmp/hb-c-watch-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char url[128];
  int n_url = snprintf(url, sizeof url, "local://%s", dir);
  CHECK(n_url > 0 && (size_t)n_url < sizeof url);
  HbEngine *a = NULL, *b = NULL;
  OK(hb_engine_open((const uint8_t *)url, (size_t)n_url, &a));
  OK(hb_engine_open((const uint8_t *)url, (size_t)n_url, &b));
  HbMailbox *mb = NULL;
  OK(hb_mailbox_new(b, &mb));
  OK(hb_mailbox_watch(mb, S("cfg:")));
  OK(hb_set_str(a, S("cfg:mode"), S("on"), 0));
  const uint8_t on[] = {0xa2, 'o', 'n'};
  expect_change(mb, HB_CHANGE_SET, "cfg:mode", on, sizeof on);
  int64_t n = 0;
  OK(hb_incr(a, S("cfg:gen"), 3, &n));
  const uint8_t three[] = {0x03};
  expect_change(mb, HB_CHANGE_INCR, "cfg:gen", three, 1);
  OK(hb_delete(a, S("cfg:mode"), NULL));
  expect_change(mb, HB_CHANGE_DELETE, "cfg:mode", NULL, 0);
  OK(hb_mailbox_unwatch(mb, S("cfg:")));
  OK(hb_set_str(a, S("cfg:mode"), S("off"), 0));
  /* The unwatched write never arrives: a write to a still-watched key comes next. */
  OK(hb_mailbox_watch(mb, S("marker")));
  OK(hb_set_int(a, S("marker"), 1, 0));
  const uint8_t one[] = {0x01};
  expect_change(mb, HB_CHANGE_SET, "marker", one, 1);
  expect_empty(mb);
  hb_mailbox_free(mb);
  hb_engine_free(a);
  hb_engine_free(b);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

int main(void) {
  HbEngine *e = NULL;
  OK(hb_engine_new(&e));
  test_every_operation(e);
  test_lag(e);
  test_bad_input(e);
  hb_engine_free(e);
  test_local_backend();
  DONE("test_watch");
}
