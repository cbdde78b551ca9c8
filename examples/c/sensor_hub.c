/*
 * sensor_hub: a small counter service on libhornbeam.
 *
 * Producer threads publish readings on "sensor:<name>" topics. The main thread waits with poll()
 * on the mailbox's readiness descriptor (subscribed to the pattern "sensor:*") and on standard
 * input at once; for each reading it bumps a counter ("count:<name>") and keeps the last value
 * ("last:<name>") in the store. Typing "stats" prints the counters; EOF or all producers done ends
 * it with a summary.
 *
 *   make examples && ./target/examples/sensor_hub < /dev/null
 */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hornbeam.h"

#define PRODUCERS 3
#define READINGS 500

static HbEngine *engine;

static void die(const char *what, HbStatus st) {
  char msg[256];
  hb_last_error(msg, sizeof msg);
  fprintf(stderr, "%s: %s (%s)\n", what, hb_status_str(st), msg);
  exit(1);
}

#define TRY(call)                              \
  do {                                         \
    HbStatus st_ = (call);                     \
    if (st_ != HB_OK) die(#call, st_);         \
  } while (0)

static void *producer(void *arg) {
  const char *name = arg;
  char topic[64], reading[32];
  int tlen = snprintf(topic, sizeof topic, "sensor:%s", name);
  for (int i = 0; i < READINGS; i++) {
    int rlen = snprintf(reading, sizeof reading, "%d.%d", 20 + i % 10, i % 7);
    TRY(hb_publish_str(engine, (const uint8_t *)topic, (size_t)tlen, (const uint8_t *)reading,
                       (size_t)rlen, NULL));
    if (i % 50 == 0) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  return NULL;
}

static void print_stats(void) {
  HbKeyList *keys = NULL;
  TRY(hb_keys(engine, (const uint8_t *)"count:", 6, &keys));
  for (size_t i = 0; i < hb_key_list_len(keys); i++) {
    const uint8_t *k;
    size_t klen;
    int64_t n = 0;
    TRY(hb_key_list_get(keys, i, &k, &klen));
    TRY(hb_get_int(engine, k, klen, &n));
    printf("%.*s = %lld\n", (int)klen, (const char *)k, (long long)n);
  }
  hb_key_list_free(keys);
}

static int handle(const HbMessage *m, long *lost) {
  if (hb_message_lagged(m) > 0) {
    *lost += (long)hb_message_lagged(m);
    return 0;
  }
  const uint8_t *topic, *payload;
  size_t tlen, plen;
  TRY(hb_message_topic(m, &topic, &tlen));
  TRY(hb_message_payload(m, &payload, &plen));
  const char *name = (const char *)topic + 7; /* after "sensor:" */
  int nlen = (int)tlen - 7;
  char key[64];
  int klen = snprintf(key, sizeof key, "count:%.*s", nlen, name);
  int64_t count;
  TRY(hb_incr(engine, (const uint8_t *)key, (size_t)klen, 1, &count));
  klen = snprintf(key, sizeof key, "last:%.*s", nlen, name);
  TRY(hb_set(engine, (const uint8_t *)key, (size_t)klen, payload, plen, 0));
  return 1;
}

int main(void) {
  TRY(hb_engine_new(&engine));
  HbMailbox *mb = NULL;
  TRY(hb_mailbox_new(engine, &mb));
  TRY(hb_mailbox_subscribe(mb, (const uint8_t *)"sensor:*", 8));
  int fd;
  TRY(hb_mailbox_fd(mb, &fd));

  const char *names[PRODUCERS] = {"kitchen", "garage", "attic"};
  pthread_t threads[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++) pthread_create(&threads[i], NULL, producer, (void *)names[i]);

  long received = 0, lost = 0;
  int stdin_open = 1, idle_rounds = 0;
  /* Bounded: ends when every reading is accounted for, or after 5 idle seconds. */
  while (received + lost < (long)PRODUCERS * READINGS && idle_rounds < 50) {
    struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    int n = poll(fds, stdin_open ? 2 : 1, 100);
    if (n == 0) {
      idle_rounds++;
      continue;
    }
    idle_rounds = 0;
    if (fds[0].revents & POLLIN) {
      /* Drain until HB_EMPTY: that re-arms the descriptor (wake-ups are coalesced). */
      HbMessage *m = NULL;
      HbStatus st;
      while ((st = hb_mailbox_try_recv(mb, &m)) == HB_OK) {
        received += handle(m, &lost);
        hb_message_free(m);
      }
      if (st != HB_EMPTY) die("hb_mailbox_try_recv", st);
    }
    if (stdin_open && (fds[1].revents & (POLLIN | POLLHUP))) {
      char line[128];
      if (!fgets(line, sizeof line, stdin)) stdin_open = 0;
      else if (strncmp(line, "stats", 5) == 0) print_stats();
    }
  }
  for (int i = 0; i < PRODUCERS; i++) pthread_join(threads[i], NULL);
  print_stats();
  printf("received %ld readings, %ld lost to a full mailbox\n", received, lost);
  hb_mailbox_free(mb);
  hb_engine_free(engine);
  return received + lost == (long)PRODUCERS * READINGS ? 0 : 1;
}
