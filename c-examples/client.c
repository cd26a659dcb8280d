/*
 * client: uses host_daemon's Mailbox from another process through libmgr's C
 * client API and checks every result; exits non-zero on any mismatch.
 *
 * Usage: client ADDRESS [--shutdown]   (authkey from $MGR_AUTHKEY, default
 * "secret"). With --shutdown it asks the server to shut down at the end.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mgr.h"

static int failures = 0;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "client: FAILED at line %d: ", __LINE__);                \
      fprintf(stderr, __VA_ARGS__);                                            \
      fprintf(stderr, " (last error: %s)\n", mgr_last_error());                \
      failures++;                                                              \
    }                                                                          \
  } while (0)

/* A one-item argument tuple; takes ownership of item. */
static mgr_value *args1(mgr_value *item) {
  mgr_value *t = mgr_value_tuple();
  mgr_value_append(t, item);
  return t;
}

/* Calls method(args) expecting an int; frees args. Returns -1000 on failure. */
static int64_t call_int(mgr_proxy *p, const char *method, mgr_value *args) {
  mgr_value *out = NULL;
  int64_t i = -1000;
  mgr_status st = mgr_call(p, method, args, NULL, &out);
  mgr_value_free(args);
  CHECK(st == MGR_OK, "%s() returned %s", method, mgr_status_name(st));
  if (st == MGR_OK)
    CHECK(mgr_value_get_int(out, &i) == MGR_OK, "%s() did not return an int", method);
  mgr_value_free(out);
  return i;
}

/* Calls method(args) expecting the str `want`; frees args. */
static void expect_str(mgr_proxy *p, const char *method, mgr_value *args, const char *want) {
  mgr_value *out = NULL;
  char *got = NULL;
  mgr_status st = mgr_call(p, method, args, NULL, &out);
  mgr_value_free(args);
  CHECK(st == MGR_OK, "%s() returned %s", method, mgr_status_name(st));
  if (st == MGR_OK) {
    got = mgr_value_str_dup(out);
    CHECK(got && strcmp(got, want) == 0, "%s() returned %s, wanted '%s'", method,
          got ? got : "(not a str)", want);
  }
  mgr_string_free(got);
  mgr_value_free(out);
}

/* Calls method() expecting a remote error of `kind`. */
static void expect_error(mgr_proxy *p, const char *method, const char *kind, const char *in_message) {
  mgr_value *out = NULL;
  mgr_status st = mgr_call(p, method, NULL, NULL, &out);
  CHECK(st == MGR_ERR_REMOTE, "%s() returned %s, wanted MGR_ERR_REMOTE", method, mgr_status_name(st));
  CHECK(out == NULL, "%s(): out-pointer written on failure", method);
  CHECK(strcmp(mgr_last_error_kind(), kind) == 0, "%s() raised %s, wanted %s", method,
        mgr_last_error_kind(), kind);
  CHECK(strstr(mgr_last_error(), in_message) != NULL, "%s() message '%s' lacks '%s'", method,
        mgr_last_error(), in_message);
  mgr_value_free(out);
}

static size_t objects(mgr_client *c) {
  size_t n = 0;
  mgr_status st = mgr_client_number_of_objects(c, &n);
  CHECK(st == MGR_OK, "number_of_objects returned %s", mgr_status_name(st));
  return n;
}

/* In a child process: connect anew and put `msg` into the mailbox `ref` names. */
static int put_from_child(const char *address, const char *key, const mgr_value *ref, const char *msg) {
  mgr_client *c = NULL;
  mgr_proxy *p = NULL;
  mgr_value *out = NULL;
  int ok = 0;
  if (mgr_client_connect(address, (const uint8_t *)key, strlen(key), &c) == MGR_OK &&
      mgr_client_proxy_from_ref(c, ref, &p) == MGR_OK) {
    mgr_value *args = args1(mgr_value_str(msg));
    ok = mgr_call(p, "put", args, NULL, &out) == MGR_OK;
    mgr_value_free(args);
  }
  if (!ok)
    fprintf(stderr, "client child: %s\n", mgr_last_error());
  mgr_value_free(out);
  mgr_proxy_free(p);
  mgr_client_free(c);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  const char *key = getenv("MGR_AUTHKEY");
  mgr_client *c = NULL;
  mgr_proxy *box = NULL, *snap = NULL, *copy = NULL;
  mgr_value *out = NULL, *ref = NULL;
  size_t before;
  int64_t tick1, tick2;
  mgr_status st;
  pid_t child;
  int wstatus = 0;

  if (argc < 2) {
    fprintf(stderr, "usage: client ADDRESS [--shutdown]\n");
    return 2;
  }
  if (!key)
    key = "secret";

  st = mgr_client_connect(argv[1], (const uint8_t *)"wrong", 5, &c);
  CHECK(st == MGR_ERR_AUTH && c == NULL, "a wrong key gave %s", mgr_status_name(st));

  st = mgr_client_connect(argv[1], (const uint8_t *)key, strlen(key), &c);
  if (st != MGR_OK) {
    fprintf(stderr, "client: connect: %s: %s\n", mgr_status_name(st), mgr_last_error());
    return 1;
  }
  before = objects(c);

  st = mgr_create(c, "Mailbox", NULL, NULL, &box);
  CHECK(st == MGR_OK, "create Mailbox: %s", mgr_status_name(st));
  if (st != MGR_OK) {
    mgr_client_free(c);
    return 1;
  }
  CHECK(strcmp(mgr_proxy_typeid(box), "Mailbox") == 0, "typeid %s", mgr_proxy_typeid(box));
  CHECK(objects(c) == before + 1, "one more object after create");

  /* Plain calls. */
  CHECK(call_int(box, "put", args1(mgr_value_str("hello"))) == 1, "put returns the count");
  CHECK(call_int(box, "put", args1(mgr_value_str("world"))) == 2, "put returns the count");
  CHECK(call_int(box, "count", NULL) == 2, "count");
  expect_str(box, "get", NULL, "hello");
  expect_str(box, "pop", NULL, "world");
  expect_str(box, "__repr__", NULL, "<Mailbox holding 0 messages>");

  /* Errors raised by the host, and a failing callback. */
  expect_error(box, "pop", "IndexError", "empty mailbox");
  expect_error(box, "bad", "RuntimeError", "Mailbox.bad failed");
  /* Not exposed: the server answers with a traceback (as CPython's does); the
     client reads the exception's kind from its last line. */
  expect_error(box, "nope", "AttributeError", "method 'nope'");

  /* Deferred, answered by the daemon's timer: ticks only go forward. */
  tick1 = call_int(box, "wait_tick", NULL);
  tick2 = call_int(box, "wait_tick", NULL);
  CHECK(tick1 >= 1 && tick2 > tick1, "ticks %lld then %lld", (long long)tick1, (long long)tick2);

  /* Deferred, answered by another client's put (in a child process). */
  ref = mgr_proxy_to_value(box);
  fflush(NULL);
  child = fork();
  if (child == 0) {
    /* The child shares the parent's connection socket: it must not free the
       parent's client or proxies (that would send decrefs on it). */
    int rc = put_from_child(argv[1], key, ref, "from the child");
    mgr_value_free(ref);
    _exit(rc);
  }
  CHECK(child > 0, "fork");
  expect_str(box, "get", NULL, "from the child");
  CHECK(waitpid(child, &wstatus, 0) == child && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0,
        "child put");
  mgr_value_free(ref);

  /* method_to_typeid: a value made into a Snapshot, an object handed over. */
  call_int(box, "put", args1(mgr_value_str("a")));
  call_int(box, "put", args1(mgr_value_str("b")));
  st = mgr_call(box, "snapshot", NULL, NULL, &out);
  CHECK(st == MGR_ERR_PROTOCOL && out == NULL, "mgr_call on a proxy-returning method gave %s",
        mgr_status_name(st));
  st = mgr_call_proxy(box, "snapshot", NULL, NULL, &snap);
  CHECK(st == MGR_OK, "snapshot: %s", mgr_status_name(st));
  if (st == MGR_OK) {
    CHECK(strcmp(mgr_proxy_typeid(snap), "Snapshot") == 0, "snapshot typeid %s", mgr_proxy_typeid(snap));
    CHECK(call_int(snap, "len", NULL) == 2, "snapshot len");
    expect_str(snap, "item", args1(mgr_value_int(1)), "b");
    st = mgr_call(snap, "item", NULL, NULL, &out);
    CHECK(st == MGR_ERR_REMOTE && strcmp(mgr_last_error_kind(), "TypeError") == 0, "item() without index");
  }
  st = mgr_call_proxy(box, "fork", NULL, NULL, &copy);
  CHECK(st == MGR_OK, "fork: %s", mgr_status_name(st));
  if (st == MGR_OK) {
    CHECK(strcmp(mgr_proxy_typeid(copy), "Mailbox") == 0, "fork typeid");
    CHECK(call_int(copy, "count", NULL) == 2, "forked mailbox has the messages");
    expect_str(copy, "get", NULL, "a");
    CHECK(call_int(box, "count", NULL) == 2, "the original is untouched");
  }
  CHECK(objects(c) == before + 3, "mailbox, snapshot and fork are alive");

  /* Releasing proxies destroys the objects. */
  mgr_proxy_free(snap);
  mgr_proxy_free(copy);
  mgr_proxy_free(box);
  CHECK(objects(c) == before, "objects released (%lu, wanted %lu)", (unsigned long)objects(c),
        (unsigned long)before);

  /* NULL handling at the boundary. */
  CHECK(mgr_call(NULL, "x", NULL, NULL, &out) == MGR_ERR_NULL_ARGUMENT, "NULL proxy");
  mgr_proxy_free(NULL);
  mgr_value_free(NULL);

  if (argc > 2 && strcmp(argv[2], "--shutdown") == 0) {
    st = mgr_client_shutdown(c);
    CHECK(st == MGR_OK, "shutdown: %s", mgr_status_name(st));
  }
  mgr_client_free(c);
  if (failures) {
    fprintf(stderr, "client: %d checks failed\n", failures);
    return 1;
  }
  printf("client: all checks passed\n");
  return 0;
}
