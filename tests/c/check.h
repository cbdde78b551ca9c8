/* Minimal assertion helpers for the C tests: each failed CHECK prints where and exits 1. */
#ifndef HB_CHECK_H
#define HB_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hornbeam.h"

static int checks_run = 0;

#define CHECK(cond)                                                                   \
  do {                                                                                \
    checks_run++;                                                                     \
    if (!(cond)) {                                                                    \
      char err_[512];                                                                 \
      hb_last_error(err_, sizeof err_);                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
              #cond, err_);                                                           \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

#define CHECK_STATUS(call, want) CHECK((call) == (want))
#define OK(call) CHECK_STATUS(call, HB_OK)
#define S(lit) (const uint8_t *)(lit), (sizeof(lit) - 1)

#define DONE(name)                                                  \
  do {                                                              \
    printf("%s: %d checks passed\n", name, checks_run);             \
    return 0;                                                       \
  } while (0)

#endif
