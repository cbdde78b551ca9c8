/* The store through the C ABI: values, counters, strings, keys, TTL, and every bad input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static void test_values(HbEngine *e) {
  /* MessagePack fixstr "hi" */
  const uint8_t hi[] = {0xa2, 'h', 'i'};
  OK(hb_set(e, S("greeting"), hi, sizeof hi, 0));
  HbBytes *b = NULL;
  OK(hb_get(e, S("greeting"), &b));
  CHECK(hb_bytes_len(b) == 3 && memcmp(hb_bytes_data(b), hi, 3) == 0);
  hb_bytes_free(b);

  uint8_t buf[8];
  size_t len = 0;
  OK(hb_get_into(e, S("greeting"), buf, sizeof buf, &len));
  CHECK(len == 3 && memcmp(buf, hi, 3) == 0);
  CHECK_STATUS(hb_get_into(e, S("greeting"), buf, 2, &len), HB_BUFFER_TOO_SMALL);
  CHECK(len == 3); /* the needed size */
  CHECK_STATUS(hb_get_into(e, S("greeting"), NULL, 0, &len), HB_BUFFER_TOO_SMALL);
  CHECK_STATUS(hb_get_into(e, S("missing"), buf, sizeof buf, &len), HB_NOT_FOUND);
  CHECK_STATUS(hb_get_into(e, S("greeting"), NULL, 5, &len), HB_NULL_ARGUMENT);
  OK(hb_set_int(e, S("small-int"), 300, 0));
  OK(hb_get_into(e, S("small-int"), buf, sizeof buf, &len));
  CHECK(len == 3 && buf[0] == 0xcd && buf[1] == 0x01 && buf[2] == 0x2c);

  HbBytes *untouched = (HbBytes *)0x1;
  CHECK_STATUS(hb_get(e, S("missing"), &untouched), HB_NOT_FOUND);
  CHECK(untouched == (HbBytes *)0x1); /* outputs written only on success */

  const uint8_t bad[] = {0xc1};
  CHECK_STATUS(hb_set(e, S("bad"), bad, 1, 0), HB_INVALID_VALUE);
  const uint8_t truncated[] = {0x92, 0x01};
  CHECK_STATUS(hb_set(e, S("bad"), truncated, 2, 0), HB_INVALID_VALUE);
  CHECK_STATUS(hb_get(e, S("bad"), &b), HB_NOT_FOUND);

  OK(hb_set_str(e, S("name"), S("Zoë"), 0));
  OK(hb_get_str(e, S("name"), &b));
  CHECK(strcmp(hb_bytes_cstr(b), "Zoë") == 0);
  CHECK(hb_bytes_len(b) == strlen("Zoë"));
  hb_bytes_free(b);
  CHECK_STATUS(hb_get_str(e, S("greeting"), &b), HB_OK);
  hb_bytes_free(b);
  /* A bin value of UTF-8 bytes is not a string (found by fuzz/python/fuzz_decode.py). */
  const uint8_t bin_abc[] = {0xc4, 0x03, 'a', 'b', 'c'};
  OK(hb_set(e, S("bin"), bin_abc, sizeof bin_abc, 0));
  HbBytes *kept = (HbBytes *)0x1;
  CHECK_STATUS(hb_get_str(e, S("bin"), &kept), HB_INVALID_VALUE);
  CHECK(kept == (HbBytes *)0x1);

  bool existed = false;
  OK(hb_delete(e, S("name"), &existed));
  CHECK(existed);
  OK(hb_delete(e, S("name"), &existed));
  CHECK(!existed);
  OK(hb_delete(e, S("name"), NULL));
}

static void test_counters(HbEngine *e) {
  int64_t n = 0;
  OK(hb_incr(e, S("hits"), 1, &n));
  CHECK(n == 1);
  OK(hb_incr(e, S("hits"), 41, &n));
  CHECK(n == 42);
  OK(hb_get_int(e, S("hits"), &n));
  CHECK(n == 42);
  OK(hb_set_int(e, S("max"), INT64_MAX, 0));
  n = 7;
  CHECK_STATUS(hb_incr(e, S("max"), 1, &n), HB_OVERFLOW);
  CHECK(n == 7);
  OK(hb_get_int(e, S("max"), &n));
  CHECK(n == INT64_MAX);
  OK(hb_set_str(e, S("text"), S("abc"), 0));
  CHECK_STATUS(hb_incr(e, S("text"), 1, &n), HB_NOT_AN_INTEGER);
  CHECK_STATUS(hb_get_int(e, S("text"), &n), HB_NOT_AN_INTEGER);
  char msg[256];
  size_t len = hb_last_error(msg, sizeof msg);
  CHECK(len > 0 && strstr(msg, "text") != NULL);
  CHECK(hb_last_error(NULL, 0) == len);
  char tiny[4];
  hb_last_error(tiny, sizeof tiny);
  CHECK(strlen(tiny) == 3); /* truncated, NUL-terminated */
}

static void test_keys(HbEngine *e) {
  OK(hb_set_int(e, S("room:b:user"), 1, 0));
  OK(hb_set_int(e, S("room:a:user"), 1, 0));
  OK(hb_set_int(e, S("room:c:user"), 1, 0));
  HbKeyList *list = NULL;
  OK(hb_keys(e, S("room:"), &list));
  CHECK(hb_key_list_len(list) == 3);
  const uint8_t *k;
  size_t klen;
  OK(hb_key_list_get(list, 0, &k, &klen));
  CHECK(klen == 11 && memcmp(k, "room:a:user", 11) == 0);
  OK(hb_key_list_get(list, 2, &k, &klen));
  CHECK(memcmp(k, "room:c:user", 11) == 0);
  CHECK_STATUS(hb_key_list_get(list, 3, &k, &klen), HB_INVALID_ARGUMENT);
  hb_key_list_free(list);
  OK(hb_keys(e, NULL, 0, &list)); /* all keys */
  CHECK(hb_key_list_len(list) >= 3);
  hb_key_list_free(list);
}

static void test_ttl(HbEngine *e) {
  int64_t ms = 0;
  OK(hb_set_int(e, S("session"), 1, 60000));
  OK(hb_ttl(e, S("session"), &ms));
  CHECK(ms > 59000 && ms <= 60000);
  OK(hb_set_int(e, S("forever"), 1, 0));
  OK(hb_ttl(e, S("forever"), &ms));
  CHECK(ms == -1);
  OK(hb_ttl(e, S("nothing"), &ms));
  CHECK(ms == -2);
  bool existed = false;
  OK(hb_expire(e, S("forever"), 1, &existed));
  CHECK(existed);
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  CHECK_STATUS(hb_get_int(e, S("forever"), &ms), HB_NOT_FOUND);
}

static void test_bad_input(HbEngine *e) {
  int64_t n;
  HbBytes *b;
  CHECK_STATUS(hb_incr(NULL, S("k"), 1, &n), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_incr(e, NULL, 3, 1, &n), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_incr(e, S("k"), 1, NULL), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_get_int(e, S("k"), &n), HB_NOT_FOUND); /* the failed incr did nothing */
  CHECK_STATUS(hb_get(e, S("k"), NULL), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_set(e, S("k"), NULL, 5, 0), HB_NULL_ARGUMENT);
  const uint8_t invalid_utf8[] = {'a', 0xff, 0xfe};
  CHECK_STATUS(hb_set_int(e, invalid_utf8, 3, 1, 0), HB_INVALID_UTF8);
  CHECK_STATUS(hb_set_str(e, S("k"), invalid_utf8, 3, 0), HB_INVALID_UTF8);
  CHECK_STATUS(hb_get(e, invalid_utf8, 3, &b), HB_INVALID_UTF8);
  static uint8_t long_key[5000];
  memset(long_key, 'k', sizeof long_key);
  CHECK_STATUS(hb_set_int(e, long_key, sizeof long_key, 1, 0), HB_INVALID_KEY);
  size_t big_len = 17u * 1024 * 1024;
  uint8_t *big = malloc(big_len);
  CHECK(big != NULL);
  big[0] = 0xc6; /* bin32 header: the value is too large before it is parsed */
  CHECK_STATUS(hb_set(e, S("k"), big, big_len, 0), HB_VALUE_TOO_LARGE);
  free(big);
  CHECK_STATUS(hb_keys(e, S("x"), NULL), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_engine_new(NULL), HB_NULL_ARGUMENT);
  CHECK(strcmp(hb_status_str(HB_NOT_FOUND), "HB_NOT_FOUND") == 0);
  CHECK(strcmp(hb_status_str(HB_PANIC), "HB_PANIC") == 0);
  CHECK(hb_bytes_len(NULL) == 0 && hb_bytes_data(NULL) == NULL);
  hb_engine_free(NULL);
  hb_bytes_free(NULL);
  hb_key_list_free(NULL);
  hb_mailbox_free(NULL);
  hb_message_free(NULL);
}

/* NaN and the infinities are ordinary MessagePack floats: stored and read back bit for bit, and
   an integer counter cannot be made from them. */
static void test_nan_and_infinities(HbEngine *e) {
  const uint8_t values[][9] = {
      {0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0},          /* float64 NaN */
      {0xcb, 0xff, 0xf8, 0, 0, 0, 0, 0, 1},          /* float64 NaN, sign and payload bits */
      {0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0},          /* float64 +inf */
      {0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0},          /* float64 -inf */
      {0xca, 0x7f, 0xc0, 0, 0, 0, 0, 0, 0},          /* float32 NaN (5 bytes used) */
  };
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    size_t len = values[i][0] == 0xca ? 5 : 9;
    OK(hb_set(e, S("float"), values[i], len, 0));
    HbBytes *b = NULL;
    OK(hb_get(e, S("float"), &b));
    CHECK(hb_bytes_len(b) == len && memcmp(hb_bytes_data(b), values[i], len) == 0);
    hb_bytes_free(b);
    int64_t n = 0;
    CHECK_STATUS(hb_incr(e, S("float"), 1, &n), HB_NOT_AN_INTEGER);
    CHECK_STATUS(hb_get_int(e, S("float"), &n), HB_NOT_AN_INTEGER);
  }
  OK(hb_delete(e, S("float"), NULL));
}

static void test_default_engine_is_shared(void) {
  HbEngine *a = NULL, *b = NULL;
  OK(hb_engine_default(&a));
  OK(hb_engine_default(&b));
  OK(hb_set_int(a, S("shared"), 5, 0));
  int64_t n = 0;
  OK(hb_get_int(b, S("shared"), &n));
  CHECK(n == 5);
  hb_engine_free(a);
  hb_engine_free(b);
  HbEngine *c = NULL;
  OK(hb_engine_open(S("embedded://"), &c));
  CHECK_STATUS(hb_get_int(c, S("shared"), &n), HB_NOT_FOUND);
  hb_engine_free(c);
  CHECK_STATUS(hb_engine_open(S("nosuch://x"), &c), HB_INVALID_ARGUMENT);
}

/* local://: two handles on one directory share data and messages; a forked child resets,
 * reopens the directory and sees the parent's data, and the parent sees the child's. */
static void test_local_backend(void) {
  char dir[] = "/tmp/hb-c-local-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char url[128];
  int n_url = snprintf(url, sizeof url, "local://%s", dir);
  CHECK(n_url > 0 && (size_t)n_url < sizeof url);
  HbEngine *a = NULL, *b = NULL;
  OK(hb_engine_open((const uint8_t *)url, (size_t)n_url, &a));
  OK(hb_engine_open((const uint8_t *)url, (size_t)n_url, &b));
  int64_t n = 0;
  OK(hb_incr(a, S("hits"), 2, &n));
  OK(hb_incr(b, S("hits"), 3, &n));
  CHECK(n == 5);
  HbMailbox *m = NULL;
  OK(hb_mailbox_new(b, &m));
  OK(hb_mailbox_subscribe(m, S("room:*")));
  size_t reached = 0;
  OK(hb_publish(a, S("room:lobby"), S("hi"), &reached));
  CHECK(reached == 1); /* b's relay, another "process" on the directory */
  HbMessage *msg = NULL;
  OK(hb_mailbox_recv(m, 5000, &msg));
  const uint8_t *p = NULL;
  size_t len = 0;
  OK(hb_message_payload(msg, &p, &len));
  CHECK(len == 2 && memcmp(p, "hi", 2) == 0);
  hb_message_free(msg);

  fflush(NULL);
  int verdict[2];
  CHECK(pipe(verdict) == 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    hb_reset_after_fork();
    HbEngine *c = NULL;
    int64_t v = 0;
    int ok = hb_engine_open((const uint8_t *)url, (size_t)n_url, &c) == HB_OK &&
             hb_get_int(c, S("hits"), &v) == HB_OK && v == 5 &&
             hb_set_int(c, S("from_child"), 42, 0) == HB_OK;
    /* A handle from before the fork refuses to touch the parent's environment. */
    ok = ok && hb_get_int(a, S("hits"), &v) == HB_BACKEND;
    if (!ok) {
      char err[512];
      hb_last_error(err, sizeof err);
      fprintf(stderr, "child: %s\n", err);
    }
    char byte = ok ? 'y' : 'n';
    CHECK(write(verdict[1], &byte, 1) == 1);
    /* End without an exit: the parent's threads do not exist in a forked child, so memcheck would
     * report their memory as lost at the child's exit. */
    kill(getpid(), SIGKILL);
  }
  close(verdict[1]);
  char byte = 0;
  CHECK(read(verdict[0], &byte, 1) == 1 && byte == 'y');
  close(verdict[0]);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  OK(hb_get_int(a, S("from_child"), &n));
  CHECK(n == 42);

  hb_mailbox_free(m);
  hb_engine_free(a);
  hb_engine_free(b);
  HbEngine *bad = NULL;
  CHECK_STATUS(hb_engine_open(S("local://relative/dir"), &bad), HB_INVALID_ARGUMENT);
  CHECK_STATUS(hb_engine_open(S("local:///proc/no/such/place"), &bad), HB_BACKEND);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

int main(void) {
  HbEngine *e = NULL;
  OK(hb_engine_new(&e));
  test_values(e);
  test_counters(e);
  test_keys(e);
  test_ttl(e);
  test_bad_input(e);
  test_nan_and_infinities(e);
  test_default_engine_is_shared();
  test_local_backend();
  hb_engine_free(e);
  DONE("test_store");
}
