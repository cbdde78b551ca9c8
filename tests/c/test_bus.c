/* The bus through the C ABI: mailboxes, patterns, poll() on the readiness fd, lag, close. */
#include <poll.h>
#include <string.h>

#include "check.h"

static int readable(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
  return poll(&p, 1, timeout_ms) > 0;
}

static void test_publish_receive(HbEngine *e) {
  HbMailbox *mb = NULL;
  OK(hb_mailbox_new(e, &mb));
  OK(hb_mailbox_subscribe(mb, S("room:*")));
  size_t delivered = 99;
  OK(hb_publish(e, S("room:lobby"), S("raw bytes"), &delivered));
  CHECK(delivered == 1);
  OK(hb_publish(e, S("room:a:b"), S("not matched"), &delivered));
  CHECK(delivered == 0);
  HbMessage *m = NULL;
  OK(hb_mailbox_recv(mb, 1000, &m));
  const uint8_t *p;
  size_t n;
  OK(hb_message_topic(m, &p, &n));
  CHECK(n == 10 && memcmp(p, "room:lobby", 10) == 0);
  OK(hb_message_payload(m, &p, &n));
  CHECK(n == 9 && memcmp(p, "raw bytes", 9) == 0);
  CHECK(hb_message_lagged(m) == 0);
  hb_message_free(m);
  m = (HbMessage *)0x1;
  CHECK_STATUS(hb_mailbox_try_recv(mb, &m), HB_EMPTY);
  CHECK(m == (HbMessage *)0x1);
  CHECK_STATUS(hb_mailbox_recv(mb, 20, &m), HB_TIMEOUT);
  OK(hb_publish_str(e, S("room:x"), S("hé"), NULL));
  OK(hb_mailbox_try_recv(mb, &m));
  OK(hb_message_payload(m, &p, &n));
  CHECK(n == 4 && p[0] == 0xa3); /* MessagePack fixstr of 3 bytes */
  hb_message_free(m);
  OK(hb_mailbox_unsubscribe(mb, S("room:*")));
  OK(hb_publish(e, S("room:lobby"), S("x"), &delivered));
  CHECK(delivered == 0);
  hb_mailbox_free(mb);
}

static void test_fd_and_lag(HbEngine *e) {
  HbMailbox *mb = NULL;
  OK(hb_mailbox_new(e, &mb));
  int fd = -1;
  OK(hb_mailbox_fd(mb, &fd));
  CHECK(fd >= 0);
  OK(hb_mailbox_subscribe(mb, S("flood:>")));
  CHECK(!readable(fd, 0));
  for (int i = 0; i < 2000; i++) OK(hb_publish(e, S("flood:a:b"), S("x"), NULL));
  CHECK(readable(fd, 1000));
  int msgs = 0;
  uint64_t lagged = 0;
  HbMessage *m = NULL;
  for (int i = 0; i < 5000; i++) {
    HbStatus st = hb_mailbox_try_recv(mb, &m);
    if (st == HB_EMPTY) break;
    OK(st);
    if (hb_message_lagged(m) > 0) lagged += hb_message_lagged(m);
    else msgs++;
    hb_message_free(m);
  }
  CHECK(msgs == 1024);
  CHECK(lagged == 2000 - 1024);
  CHECK(!readable(fd, 0));
  hb_mailbox_free(mb);
}

static void test_bad_input(HbEngine *e) {
  HbMailbox *mb = NULL;
  OK(hb_mailbox_new(e, &mb));
  CHECK_STATUS(hb_mailbox_subscribe(mb, S("a:>:b")), HB_INVALID_TOPIC);
  CHECK_STATUS(hb_publish(e, S("room:*"), S("x"), NULL), HB_INVALID_TOPIC);
  CHECK_STATUS(hb_publish(e, S(""), S("x"), NULL), HB_INVALID_TOPIC);
  const uint8_t invalid_utf8[] = {0xc3, 0x28};
  CHECK_STATUS(hb_mailbox_subscribe(mb, invalid_utf8, 2), HB_INVALID_UTF8);
  CHECK_STATUS(hb_publish(e, invalid_utf8, 2, S("x"), NULL), HB_INVALID_UTF8);
  CHECK_STATUS(hb_mailbox_subscribe(NULL, S("t")), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_mailbox_recv(mb, 0, NULL), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_message_topic(NULL, NULL, NULL), HB_NULL_ARGUMENT);
  CHECK(hb_message_lagged(NULL) == 0);
  OK(hb_mailbox_close(mb));
  HbMessage *m = NULL;
  CHECK_STATUS(hb_mailbox_recv(mb, 10, &m), HB_CLOSED);
  CHECK_STATUS(hb_mailbox_subscribe(mb, S("t")), HB_CLOSED);
  hb_mailbox_free(mb);
}

int main(void) {
  HbEngine *e = NULL;
  OK(hb_engine_new(&e));
  test_publish_receive(e);
  test_fd_and_lag(e);
  test_bad_input(e);
  hb_engine_free(e);
  DONE("test_bus");
}
