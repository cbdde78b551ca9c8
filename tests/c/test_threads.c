/* Handles shared across pthreads: exact counters, and a publisher feeding receivers. */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "check.h"

#define THREADS 4
#define INCRS 50000
#define MESSAGES 20000

static HbEngine *engine;

static void *incr_worker(void *arg) {
  (void)arg;
  for (int i = 0; i < INCRS; i++) {
    int64_t n;
    if (hb_incr(engine, S("hot"), 1, &n) != HB_OK) return (void *)1;
  }
  return NULL;
}

struct receiver {
  HbMailbox *mb;
  long got;
};

static void *receive_worker(void *arg) {
  struct receiver *r = arg;
  for (;;) {
    HbMessage *m = NULL;
    HbStatus st = hb_mailbox_recv(r->mb, 5000, &m);
    if (st == HB_CLOSED || st == HB_TIMEOUT) return NULL;
    if (st != HB_OK) return (void *)1;
    const uint8_t *p;
    size_t n;
    hb_message_payload(m, &p, &n);
    int done = (n == 4 && memcmp(p, "stop", 4) == 0);
    /* A lag notice stands for the messages a full mailbox dropped: count them too. */
    if (hb_message_lagged(m) > 0) r->got += (long)hb_message_lagged(m);
    else if (!done) r->got++;
    hb_message_free(m);
    if (done) return NULL;
  }
}

static void *publish_worker(void *arg) {
  (void)arg;
  for (int i = 0; i < MESSAGES; i++) {
    size_t delivered;
    if (hb_publish(engine, S("jobs:new"), S("job"), &delivered) != HB_OK) return (void *)1;
    if (i % 512 == 0) {
      struct timespec ts = {0, 100000};
      nanosleep(&ts, NULL); /* leave the receivers room: this test is about sharing, not lag */
    }
  }
  return NULL;
}

int main(void) {
  OK(hb_engine_new(&engine));
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) CHECK(pthread_create(&t[i], NULL, incr_worker, NULL) == 0);
  for (int i = 0; i < THREADS; i++) {
    void *ret;
    CHECK(pthread_join(t[i], &ret) == 0 && ret == NULL);
  }
  int64_t n = 0;
  OK(hb_get_int(engine, S("hot"), &n));
  CHECK(n == (int64_t)THREADS * INCRS);

  /* One mailbox shared by two receiving threads; each message is received exactly once. */
  struct receiver shared = {0};
  OK(hb_mailbox_new(engine, &shared.mb));
  OK(hb_mailbox_subscribe(shared.mb, S("jobs:*")));
  pthread_t recv1, recv2, pub;
  struct receiver r2 = {.mb = shared.mb, .got = 0};
  CHECK(pthread_create(&recv1, NULL, receive_worker, &shared) == 0);
  CHECK(pthread_create(&recv2, NULL, receive_worker, &r2) == 0);
  CHECK(pthread_create(&pub, NULL, publish_worker, NULL) == 0);
  void *ret;
  CHECK(pthread_join(pub, &ret) == 0 && ret == NULL);
  OK(hb_publish(engine, S("jobs:new"), S("stop"), NULL));
  OK(hb_publish(engine, S("jobs:new"), S("stop"), NULL));
  CHECK(pthread_join(recv1, &ret) == 0 && ret == NULL);
  CHECK(pthread_join(recv2, &ret) == 0 && ret == NULL);
  CHECK(shared.got + r2.got == MESSAGES); /* received once each, or reported as lost */
  hb_mailbox_free(shared.mb);
  hb_engine_free(engine);
  DONE("test_threads");
}
