/* Functions registered by name through the C ABI: register, call, replace, unregister, failures,
 * userdata ownership, bad arguments, and calls from several threads at once. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* [a, b] (MessagePack positive fixints) -> a + b, scaled by the int userdata points to. */
static void add(void *userdata, const uint8_t *args, size_t len, HbCallResult *result) {
  int scale = *(const int *)userdata;
  if (len != 3 || args[0] != 0x92 || args[1] > 0x3f || args[2] > 0x3f) {
    hb_call_result_fail(result, S("expected two small integers"));
    return;
  }
  uint8_t out = (uint8_t)((args[1] + args[2]) * scale);
  hb_call_result_set(result, &out, 1);
}

static void silent(void *userdata, const uint8_t *args, size_t len, HbCallResult *result) {
  (void)userdata, (void)args, (void)len, (void)result; /* sets no result: a failure */
}

static void garbage(void *userdata, const uint8_t *args, size_t len, HbCallResult *result) {
  (void)userdata, (void)args, (void)len;
  const uint8_t truncated[] = {0x92, 0x01}; /* an array of two holding one item */
  hb_call_result_set(result, truncated, sizeof truncated);
}

static int freed = 0;
static void free_int(void *p) {
  freed++;
  free(p);
}

static int *new_int(int v) {
  int *p = malloc(sizeof *p);
  *p = v;
  return p;
}

/* The one-byte result of add(args), or -1 (no CHECK here: threads call it too). */
static int call_small(const uint8_t *args, size_t len) {
  HbBytes *out = NULL;
  if (hb_function_call(S("add"), args, len, &out) != HB_OK) return -1;
  int v = hb_bytes_len(out) == 1 ? hb_bytes_data(out)[0] : -1;
  hb_bytes_free(out);
  return v;
}

/* Counts the calls that did not answer 10 (returned through the thread's result). */
static void *hammer(void *arg) {
  (void)arg;
  const uint8_t args[] = {0x92, 2, 3};
  intptr_t wrong = 0;
  for (int i = 0; i < 2000; i++) wrong += call_small(args, sizeof args) != 10;
  return (void *)wrong;
}

int main(void) {
  const uint8_t args[] = {0x92, 2, 3};
  HbBytes *out = NULL;

  CHECK_STATUS(hb_function_call(S("add"), args, sizeof args, &out), HB_NO_FUNCTION);
  CHECK(out == NULL);

  OK(hb_function_register(S("add"), add, new_int(1), free_int));
  CHECK(call_small(args, sizeof args) == 5);

  /* Replacing a function releases the old userdata once. */
  OK(hb_function_register(S("add"), add, new_int(2), free_int));
  CHECK(freed == 1);
  CHECK(call_small(args, sizeof args) == 10);

  /* Several threads call it at once. */
  pthread_t t[4];
  for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, hammer, NULL) == 0);
  for (int i = 0; i < 4; i++) {
    void *wrong = NULL;
    CHECK(pthread_join(t[i], &wrong) == 0);
    CHECK(wrong == NULL);
  }

  /* The function's own failure, with its message. */
  const uint8_t strings[] = {0x92, 0xa1, 'x', 0x01};
  CHECK_STATUS(hb_function_call(S("add"), strings, sizeof strings, &out), HB_FUNCTION_FAILED);
  char err[256];
  hb_last_error(err, sizeof err);
  CHECK(strstr(err, "expected two small integers") != NULL);

  /* Arguments must be one MessagePack array: the function is not called. */
  const uint8_t not_array[] = {0x05};
  CHECK_STATUS(hb_function_call(S("add"), not_array, sizeof not_array, &out), HB_INVALID_VALUE);
  const uint8_t truncated[] = {0x92, 0x01};
  CHECK_STATUS(hb_function_call(S("add"), truncated, sizeof truncated, &out), HB_INVALID_VALUE);

  /* A function that sets nothing, or sets a malformed value, fails the call. */
  OK(hb_function_register(S("silent"), silent, NULL, NULL));
  CHECK_STATUS(hb_function_call(S("silent"), args, sizeof args, &out), HB_FUNCTION_FAILED);
  OK(hb_function_register(S("garbage"), garbage, NULL, NULL));
  CHECK_STATUS(hb_function_call(S("garbage"), args, sizeof args, &out), HB_INVALID_VALUE);

  /* Bad arguments. */
  CHECK_STATUS(hb_function_register(S("nothing"), NULL, NULL, NULL), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_function_register((const uint8_t *)"\xff", 1, add, NULL, NULL), HB_INVALID_UTF8);
  CHECK_STATUS(hb_function_call(S("add"), args, sizeof args, NULL), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_function_call(S("add"), NULL, 3, &out), HB_NULL_ARGUMENT);
  CHECK_STATUS(hb_call_result_set(NULL, args, 1), HB_NULL_ARGUMENT);
  CHECK(strcmp(hb_status_str(HB_NO_FUNCTION), "HB_NO_FUNCTION") == 0);
  CHECK(strcmp(hb_status_str(HB_FUNCTION_FAILED), "HB_FUNCTION_FAILED") == 0);

  /* Unregistering releases the userdata; a second time finds nothing. */
  bool removed = false;
  OK(hb_function_unregister(S("add"), &removed));
  CHECK(removed && freed == 2);
  OK(hb_function_unregister(S("add"), &removed));
  CHECK(!removed);
  CHECK_STATUS(hb_function_call(S("add"), args, sizeof args, &out), HB_NO_FUNCTION);
  OK(hb_function_unregister(S("silent"), NULL));
  OK(hb_function_unregister(S("garbage"), NULL));

  DONE("test_calls");
}
