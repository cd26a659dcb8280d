/*
 * loop_host: one poll() loop with a frame tick that serves its own type *and*
 * calls a second server through the non-blocking client (mgr_nb_*).
 *
 * In the one loop:
 *   - an embedded server (127.0.0.1:0) serving the host's type Tally:
 *     add(n) -> running total, total();
 *   - a non-blocking client to a second server (host_daemon, whose address is
 *     argv[1]): a Mailbox, 10 puts and 10 gets pipelined, pop() on the empty
 *     box (IndexError), wait_tick() (deferred until the daemon's own timer),
 *     snapshot() (a new shared object, method_to_typeid) and its len();
 *   - a second non-blocking client to the host's own server: a Tally and 50
 *     pipelined add()s, then total();
 *   - a third client to a port nothing listens on: its call completes with an
 *     error, as a disconnect does;
 *   - a fourth freed with calls outstanding: each completes in the free, with
 *     MGR_ERR_CLOSED and no client.
 * Every call takes a callback and a malloc'd context (freed by the callback:
 * each call completes exactly once); every reply is checked. Then the proxies
 * are freed (their decrefs queue without blocking) and the loop runs until
 * the host's own server holds no object.
 *
 * Usage: loop_host DAEMON_ADDRESS   (authkey from $MGR_AUTHKEY, default
 * "secret", for both servers). Prints "loop_host: all checks passed".
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mgr.h"

#define FRAME_MS 16
#define PUTS 10
#define ADDS 50

typedef struct host {
  mgr_nb_proxy *mailbox, *snapshot, *tally;
  int remote_done, local_done, dead_done, freed_done;
  int checks, failures;
  long ticks;
} host;

/* One call's context: what its reply must be. Freed by its callback. */
typedef struct call_ctx {
  host *h;
  const char *what;
  long expect_int;      /* for int replies */
  char expect_str[16];  /* for str replies ("" when unused) */
} call_ctx;

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void check(host *h, int ok, const char *what) {
  h->checks++;
  if (!ok) {
    h->failures++;
    fprintf(stderr, "loop_host: FAILED: %s (%s)\n", what, mgr_last_error());
  }
}

static call_ctx *ctx(host *h, const char *what, long expect_int, const char *expect_str) {
  call_ctx *c = calloc(1, sizeof *c);
  if (!c) {
    perror("loop_host: calloc");
    exit(1);
  }
  c->h = h;
  c->what = what;
  c->expect_int = expect_int;
  if (expect_str)
    snprintf(c->expect_str, sizeof c->expect_str, "%s", expect_str);
  return c;
}

static mgr_value *args1_int(long i) {
  mgr_value *t = mgr_value_tuple();
  mgr_value_append(t, mgr_value_int(i));
  return t;
}

static mgr_value *args1_str(const char *s) {
  mgr_value *t = mgr_value_tuple();
  mgr_value_append(t, mgr_value_str(s));
  return t;
}

static void start(host *h, mgr_status st, const char *what) {
  check(h, st == MGR_OK, what);
}

/* ---- the host's own type: Tally ---- */

static mgr_status tally_create(void *userdata, const mgr_value *args, const mgr_value *kwargs,
                               mgr_request *req, void **out_object) {
  long *total = calloc(1, sizeof *total);
  (void)userdata;
  (void)args;
  (void)kwargs;
  (void)req;
  if (!total)
    return MGR_ERR_IO;
  *out_object = total;
  return MGR_OK;
}

static void tally_destroy(void *userdata, void *object) {
  (void)userdata;
  free(object);
}

static mgr_status tally_call(void *userdata, void *object, const char *method,
                             const mgr_value *args, const mgr_value *kwargs, mgr_request *req) {
  long *total = object;
  (void)userdata;
  (void)kwargs;
  if (strcmp(method, "add") == 0) {
    const mgr_value *n;
    int64_t i;
    if (mgr_value_get_item(args, 0, &n) != MGR_OK || mgr_value_get_int(n, &i) != MGR_OK) {
      mgr_request_raise(req, "TypeError", "add() needs an int");
      return MGR_OK;
    }
    *total += (long)i;
    return mgr_request_return(req, mgr_value_int(*total));
  }
  if (strcmp(method, "total") == 0)
    return mgr_request_return(req, mgr_value_int(*total));
  mgr_request_raise(req, "AttributeError", method);
  return MGR_OK;
}

/* ---- callbacks ---- */

/* An int reply equal to expect_int (or, with expect_int < 0, at least 1). */
static void on_int(void *userdata, mgr_nb_client *client, mgr_status st, mgr_value *value,
                   mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  int64_t i = -1;
  (void)client;
  check(c->h, st == MGR_OK && value && !proxy && mgr_value_get_int(value, &i) == MGR_OK &&
                  (c->expect_int < 0 ? i >= 1 : i == c->expect_int),
        c->what);
  mgr_value_free(value);
  mgr_nb_proxy_free(proxy);
  free(c);
}

static void on_str(void *userdata, mgr_nb_client *client, mgr_status st, mgr_value *value,
                   mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  const char *s = NULL;
  size_t n = 0;
  (void)client;
  check(c->h, st == MGR_OK && value && mgr_value_get_str(value, &s, &n) == MGR_OK &&
                  n == strlen(c->expect_str) && memcmp(s, c->expect_str, n) == 0,
        c->what);
  mgr_value_free(value);
  mgr_nb_proxy_free(proxy);
  free(c);
}

/* A remote error whose kind is expect_str. */
static void on_raise(void *userdata, mgr_nb_client *client, mgr_status st, mgr_value *value,
                     mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  (void)client;
  check(c->h, st == MGR_ERR_REMOTE && !value && !proxy &&
                  strcmp(mgr_last_error_kind(), c->expect_str) == 0,
        c->what);
  free(c);
}

static void on_snapshot_len(void *userdata, mgr_nb_client *client, mgr_status st,
                            mgr_value *value, mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  host *h = c->h;
  on_int(userdata, client, st, value, proxy);
  h->remote_done = 1;
}

static void on_snapshot(void *userdata, mgr_nb_client *client, mgr_status st, mgr_value *value,
                        mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  host *h = c->h;
  check(h, st == MGR_OK && proxy && !value && strcmp(mgr_nb_proxy_typeid(proxy), "Snapshot") == 0,
        c->what);
  free(c);
  if (!proxy) {
    h->remote_done = 1;
    return;
  }
  h->snapshot = proxy;
  start(h, mgr_nb_call(client, proxy, "len", NULL, NULL, on_snapshot_len,
                       ctx(h, "snapshot len is 1", 1, NULL)),
        "start len");
}

static void on_mailbox(void *userdata, mgr_nb_client *client, mgr_status st, mgr_value *value,
                       mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  host *h = c->h;
  char msg[16];
  int i;
  check(h, st == MGR_OK && proxy && !value, c->what);
  free(c);
  if (!proxy) {
    h->remote_done = 1;
    return;
  }
  h->mailbox = proxy;
  /* All pipelined: started now, answered in order later. */
  for (i = 0; i < PUTS; i++) {
    mgr_value *a;
    snprintf(msg, sizeof msg, "m%d", i);
    a = args1_str(msg);
    start(h, mgr_nb_call(client, proxy, "put", a, NULL, on_int, ctx(h, "put count", i + 1, NULL)),
          "start put");
    mgr_value_free(a);
  }
  for (i = 0; i < PUTS; i++) {
    snprintf(msg, sizeof msg, "m%d", i);
    start(h, mgr_nb_call(client, proxy, "get", NULL, NULL, on_str, ctx(h, "get in order", 0, msg)),
          "start get");
  }
  start(h, mgr_nb_call(client, proxy, "pop", NULL, NULL, on_raise,
                       ctx(h, "pop on empty raises IndexError", 0, "IndexError")),
        "start pop");
  {
    mgr_value *a = args1_str("last");
    start(h, mgr_nb_call(client, proxy, "put", a, NULL, on_int, ctx(h, "put last", 1, NULL)),
          "start put last");
    mgr_value_free(a);
  }
  start(h, mgr_nb_call(client, proxy, "wait_tick", NULL, NULL, on_int,
                       ctx(h, "wait_tick answered by the daemon's timer", -1, NULL)),
        "start wait_tick");
  start(h, mgr_nb_call(client, proxy, "snapshot", NULL, NULL, on_snapshot,
                       ctx(h, "snapshot is a Snapshot proxy", 0, NULL)),
        "start snapshot");
}

static void on_total(void *userdata, mgr_nb_client *client, mgr_status st, mgr_value *value,
                     mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  host *h = c->h;
  on_int(userdata, client, st, value, proxy);
  h->local_done = 1;
}

static void on_tally(void *userdata, mgr_nb_client *client, mgr_status st, mgr_value *value,
                     mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  host *h = c->h;
  long i, sum = 0;
  check(h, st == MGR_OK && proxy && !value, c->what);
  free(c);
  if (!proxy) {
    h->local_done = 1;
    return;
  }
  h->tally = proxy;
  for (i = 1; i <= ADDS; i++) {
    mgr_value *a = args1_int(i);
    sum += i;
    start(h, mgr_nb_call(client, proxy, "add", a, NULL, on_int, ctx(h, "add total", sum, NULL)),
          "start add");
    mgr_value_free(a);
  }
  start(h, mgr_nb_call(client, proxy, "total", NULL, NULL, on_total, ctx(h, "total", sum, NULL)),
        "start total");
}

/* A call still outstanding when its client is freed: MGR_ERR_CLOSED, no client. */
static void on_freed(void *userdata, mgr_nb_client *client, mgr_status st, mgr_value *value,
                     mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  check(c->h, st == MGR_ERR_CLOSED && !client && !value && !proxy, c->what);
  c->h->freed_done++;
  free(c);
}

static void on_dead(void *userdata, mgr_nb_client *client, mgr_status st, mgr_value *value,
                    mgr_nb_proxy *proxy) {
  call_ctx *c = userdata;
  (void)client;
  check(c->h, st != MGR_OK && !value && !proxy, c->what);
  c->h->dead_done = 1;
  free(c);
}

/* ---- the loop ---- */

static void add_fd(struct pollfd *fds, int *n, int fd, unsigned events) {
  fds[*n].fd = fd;
  fds[*n].events = (short)(((events & MGR_NB_READ) ? POLLIN : 0) |
                           ((events & MGR_NB_WRITE) ? POLLOUT : 0));
  fds[*n].revents = 0;
  (*n)++;
}

static int min_wait(int wait, int t) { return t >= 0 && t < wait ? t : wait; }

/* One pass of the loop: poll everything, tick, process everything. */
static int turn(host *h, mgr_server *server, mgr_nb_client **clients, int nclients,
                long *next_tick) {
  struct pollfd fds[4];
  int n = 0, i;
  long wait = *next_tick - now_ms();
  int w = wait < 0 ? 0 : (int)wait;
  w = min_wait(w, mgr_server_timeout_ms(server));
  add_fd(fds, &n, mgr_server_fd(server), MGR_NB_READ);
  for (i = 0; i < nclients; i++) {
    if (!clients[i])
      continue;
    w = min_wait(w, mgr_nb_client_timeout_ms(clients[i]));
    add_fd(fds, &n, mgr_nb_client_fd(clients[i]), mgr_nb_client_events(clients[i]));
  }
  if (mgr_server_pending(server))
    w = 0;
  if (poll(fds, (nfds_t)n, w) < 0 && errno != EINTR) {
    perror("loop_host: poll");
    return -1;
  }
  if (now_ms() >= *next_tick) {
    h->ticks++; /* the host's own frame work would go here */
    *next_tick = now_ms() + FRAME_MS;
  }
  if (mgr_server_process(server) != MGR_OK) {
    fprintf(stderr, "loop_host: mgr_server_process: %s\n", mgr_last_error());
    return -1;
  }
  for (i = 0; i < nclients; i++) {
    mgr_status st;
    if (!clients[i])
      continue;
    st = mgr_nb_client_process(clients[i], NULL);
    if (st == MGR_ERR_CLOSED) {
      /* Every call of a closed client has completed: free it. */
      mgr_nb_client_free(clients[i]);
      clients[i] = NULL;
    } else if (st != MGR_OK) {
      fprintf(stderr, "loop_host: mgr_nb_client_process: %s\n", mgr_last_error());
      return -1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  static const char *const tally_methods[] = {"add", "total"};
  const char *key = getenv("MGR_AUTHKEY");
  mgr_server *server = NULL;
  mgr_type tally_type;
  mgr_nb_client *clients[3] = {NULL, NULL, NULL}; /* remote, local, dead */
  host h;
  long next_tick;
  size_t objects = 1;
  int guard;
  mgr_status st;

  if (argc < 2) {
    fprintf(stderr, "usage: loop_host DAEMON_ADDRESS\n");
    return 2;
  }
  if (!key)
    key = "secret";
  memset(&h, 0, sizeof h);

  st = mgr_server_new("127.0.0.1:0", (const uint8_t *)key, strlen(key), NULL, &server);
  if (st != MGR_OK) {
    fprintf(stderr, "loop_host: mgr_server_new: %s\n", mgr_last_error());
    return 1;
  }
  memset(&tally_type, 0, sizeof tally_type);
  tally_type.version = MGR_TYPE_VERSION;
  tally_type.exposed = tally_methods;
  tally_type.exposed_len = 2;
  tally_type.create = tally_create;
  tally_type.call = tally_call;
  tally_type.destroy = tally_destroy;
  if (mgr_server_register(server, "Tally", &tally_type, NULL) != MGR_OK) {
    fprintf(stderr, "loop_host: register: %s\n", mgr_last_error());
    mgr_server_free(server);
    return 1;
  }

  /* Connect without waiting; calls started now go out after the handshake. */
  if (mgr_nb_client_connect(argv[1], (const uint8_t *)key, strlen(key), NULL, &clients[0]) != MGR_OK ||
      mgr_nb_client_connect(mgr_server_address(server), (const uint8_t *)key, strlen(key), NULL,
                            &clients[1]) != MGR_OK ||
      mgr_nb_client_connect("127.0.0.1:1", (const uint8_t *)key, strlen(key), NULL,
                            &clients[2]) != MGR_OK) {
    fprintf(stderr, "loop_host: mgr_nb_client_connect: %s\n", mgr_last_error());
    return 1;
  }
  check(&h, mgr_nb_client_phase(clients[0]) == MGR_NB_CONNECTING, "connecting at first");
  start(&h, mgr_nb_create(clients[0], "Mailbox", NULL, NULL, on_mailbox,
                          ctx(&h, "create Mailbox", 0, NULL)),
        "start create Mailbox");
  start(&h, mgr_nb_create(clients[1], "Tally", NULL, NULL, on_tally,
                          ctx(&h, "create Tally", 0, NULL)),
        "start create Tally");
  start(&h, mgr_nb_public(clients[2], "dummy", NULL, on_dead,
                          ctx(&h, "a call to a dead port fails", 0, NULL)),
        "start dummy");

  next_tick = now_ms() + FRAME_MS;
  for (guard = 0; guard < 100000; guard++) {
    if (h.remote_done && h.local_done && h.dead_done &&
        mgr_nb_client_pending(clients[0]) == 0 && mgr_nb_client_pending(clients[1]) == 0)
      break;
    if (turn(&h, server, clients, 3, &next_tick) != 0)
      return 1;
  }
  check(&h, clients[2] == NULL, "the dead client closed and was freed");
  check(&h, mgr_nb_client_phase(clients[0]) == MGR_NB_READY, "remote ready");
  mgr_server_number_of_objects(server, &objects);
  check(&h, objects == 1, "one Tally on the host's server");

  /* Freeing proxies queues decrefs without blocking; the loop sends them. */
  mgr_nb_proxy_free(h.tally);
  mgr_nb_proxy_free(h.snapshot);
  mgr_nb_proxy_free(h.mailbox);
  check(&h, mgr_nb_client_timeout_ms(clients[1]) == 0, "a queued decref asks for a turn");
  for (guard = 0; guard < 100000 && objects != 0; guard++) {
    if (turn(&h, server, clients, 3, &next_tick) != 0)
      return 1;
    mgr_server_number_of_objects(server, &objects);
  }
  check(&h, objects == 0, "the Tally died with its last reference");

  /* A client freed with calls outstanding completes each of them there. */
  {
    mgr_nb_client *gone = NULL;
    int i;
    if (mgr_nb_client_connect(mgr_server_address(server), (const uint8_t *)key, strlen(key), NULL,
                              &gone) != MGR_OK)
      return 1;
    for (i = 0; i < 3; i++)
      start(&h, mgr_nb_public(gone, "dummy", NULL, on_freed,
                              ctx(&h, "freed with the call outstanding", 0, NULL)),
            "start dummy");
    mgr_nb_client_free(gone);
    check(&h, h.freed_done == 3, "every outstanding call completed in free");
  }

  mgr_nb_client_free(clients[0]);
  mgr_nb_client_free(clients[1]);
  mgr_server_free(server);
  if (h.failures) {
    fprintf(stderr, "loop_host: %d of %d checks failed\n", h.failures, h.checks);
    return 1;
  }
  printf("loop_host: all checks passed (%d checks, %ld frame ticks)\n", h.checks, h.ticks);
  return 0;
}
