/*
 * host_daemon: a C daemon that embeds a libmgr server in its own poll() loop,
 * next to its own work (a periodic tick driven by the poll timeout) and a
 * self-pipe for SIGTERM/SIGINT.
 *
 * It registers two host types:
 *   Mailbox   put(msg) -> count, get() -> msg (defers while empty; a later put
 *             answers it), pop() -> msg (IndexError when empty), count(),
 *             waiting() -> getters parked in get() (a getter whose client goes
 *             away is dropped at once: the type's cancel callback),
 *             wait_tick() -> tick number (deferred; answered by the daemon's
 *             own timer), snapshot() -> Snapshot proxy (method_to_typeid, built
 *             from a returned value), fork() -> Mailbox proxy (method_to_typeid,
 *             returned as an object), bad() (the callback fails: RuntimeError).
 *   Snapshot  len(), item(i) (IndexError past the end).
 *
 * The loop gives the server bounded turns: one mgr_server_process() serves at
 * most the budget mgr_server_set_turn_budget() sets (kept small here, 16
 * requests, so that a client pipelining calls shows it; or 2 ms); while
 * mgr_server_pending() says work is left, the loop polls with timeout 0, so its
 * own tick and signals are never held up by a flood of requests.
 *
 * Usage: host_daemon [address]   (default 127.0.0.1:0; authkey from
 * $MGR_AUTHKEY, default "secret"). Prints its bound address as its first line,
 * exits 0 on a client's shutdown request or SIGTERM after freeing everything.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mgr.h"

#define TICK_MS 20
#define MAX_WAITERS 64

typedef struct daemon_state {
  long ticks;
  mgr_reply *tick_waiters[MAX_WAITERS];
  size_t n_tick_waiters;
  long created;
  long destroyed;
  long pending_turns; /* turns that left work for the next */
} daemon_state;

typedef struct mailbox {
  char **messages;
  size_t len;
  size_t cap;
  mgr_reply *getters[MAX_WAITERS];
  size_t n_getters;
} mailbox;

typedef struct snapshot {
  mgr_value *items; /* an owned list of str */
} snapshot;

static int sigpipe_fds[2] = {-1, -1};

static void on_signal(int sig) {
  int saved = errno;
  char c = (char)sig;
  if (write(sigpipe_fds[1], &c, 1) < 0) {
    /* nothing to do: the pipe is full, a wake-up is pending already */
  }
  errno = saved;
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void warn_status(const char *what, mgr_status st) {
  fprintf(stderr, "host_daemon: %s: %s: %s\n", what, mgr_status_name(st),
          mgr_last_error());
}

/* Copies positional argument i, which must be a str, into a new C string. */
static char *str_arg(const mgr_value *args, size_t i) {
  const mgr_value *item;
  if (mgr_value_get_item(args, i, &item) != MGR_OK)
    return NULL;
  return mgr_value_str_dup(item);
}

static mailbox *mailbox_new(void) { return calloc(1, sizeof(mailbox)); }

static int mailbox_push(mailbox *m, const char *msg) {
  if (m->len == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 8;
    char **grown = realloc(m->messages, cap * sizeof *grown);
    if (!grown)
      return -1;
    m->messages = grown;
    m->cap = cap;
  }
  m->messages[m->len] = malloc(strlen(msg) + 1);
  if (!m->messages[m->len])
    return -1;
  strcpy(m->messages[m->len], msg);
  m->len++;
  return 0;
}

/* Removes the first message; the caller frees it. */
static char *mailbox_shift(mailbox *m) {
  char *first = m->messages[0];
  memmove(m->messages, m->messages + 1, (m->len - 1) * sizeof *m->messages);
  m->len--;
  return first;
}

static mgr_status mailbox_create(void *userdata, const mgr_value *args,
                                 const mgr_value *kwargs, mgr_request *req,
                                 void **out_object) {
  daemon_state *d = userdata;
  size_t nargs = 0;
  (void)kwargs;
  mgr_value_len(args, &nargs);
  if (nargs != 0) {
    mgr_request_raise(req, "TypeError", "Mailbox() takes no arguments");
    return MGR_ERR_INVALID_ARGUMENT;
  }
  *out_object = mailbox_new();
  if (!*out_object)
    return MGR_ERR_IO;
  d->created++;
  return MGR_OK;
}

static void mailbox_destroy(void *userdata, void *object) {
  daemon_state *d = userdata;
  mailbox *m = object;
  size_t i;
  for (i = 0; i < m->len; i++)
    free(m->messages[i]);
  free(m->messages);
  /* Callers still waiting in get(): freeing answers them with an error. */
  for (i = 0; i < m->n_getters; i++)
    mgr_reply_free(m->getters[i]);
  free(m);
  d->destroyed++;
}

/* Removes `r` from `list` (of `*n`); true if it was there. */
static int drop_waiter(mgr_reply **list, size_t *n, mgr_reply *r) {
  size_t i;
  for (i = 0; i < *n; i++) {
    if (list[i] == r) {
      memmove(list + i, list + i + 1, (*n - i - 1) * sizeof *list);
      (*n)--;
      return 1;
    }
  }
  return 0;
}

/* The client of a parked get() or wait_tick() went away: forget its reply now,
   so dead clients never fill the waiter slots. */
static void mailbox_cancel(void *userdata, void *object, mgr_reply *reply) {
  daemon_state *d = userdata;
  mailbox *m = object;
  if (drop_waiter(m->getters, &m->n_getters, reply) ||
      drop_waiter(d->tick_waiters, &d->n_tick_waiters, reply))
    mgr_reply_free(reply);
}

static mgr_value *mailbox_repr(void *userdata, void *object) {
  mailbox *m = object;
  char buf[64];
  (void)userdata;
  snprintf(buf, sizeof buf, "<Mailbox holding %lu messages>", (unsigned long)m->len);
  return mgr_value_str(buf);
}

static mgr_status mailbox_call(void *userdata, void *object, const char *method,
                               const mgr_value *args, const mgr_value *kwargs,
                               mgr_request *req) {
  daemon_state *d = userdata;
  mailbox *m = object;
  (void)kwargs;
  if (strcmp(method, "put") == 0) {
    char *msg = str_arg(args, 0);
    if (!msg) {
      mgr_request_raise(req, "TypeError", "put() needs one str argument");
      return MGR_OK;
    }
    /* Hand it straight to a waiting get() if there is one whose caller is still
       there; answering from inside this callback is allowed. */
    while (m->n_getters > 0) {
      mgr_reply *r = m->getters[0];
      mgr_status st;
      memmove(m->getters, m->getters + 1, (m->n_getters - 1) * sizeof *m->getters);
      m->n_getters--;
      st = mgr_reply_return(r, mgr_value_str(msg));
      mgr_reply_free(r);
      if (st == MGR_OK) {
        free(msg);
        return mgr_request_return(req, mgr_value_int((int64_t)m->len));
      }
    }
    if (mailbox_push(m, msg) != 0) {
      free(msg);
      return MGR_ERR_IO;
    }
    free(msg);
    return mgr_request_return(req, mgr_value_int((int64_t)m->len));
  }
  if (strcmp(method, "get") == 0) {
    if (m->len > 0) {
      char *msg = mailbox_shift(m);
      mgr_status st = mgr_request_return(req, mgr_value_str(msg));
      free(msg);
      return st;
    }
    if (m->n_getters == MAX_WAITERS) {
      mgr_request_raise(req, "RuntimeError", "too many waiting getters");
      return MGR_OK;
    }
    return mgr_request_defer(req, &m->getters[m->n_getters++]);
  }
  if (strcmp(method, "pop") == 0) {
    char *msg;
    mgr_status st;
    if (m->len == 0) {
      mgr_request_raise(req, "IndexError", "pop from an empty mailbox");
      return MGR_OK;
    }
    msg = m->messages[--m->len];
    st = mgr_request_return(req, mgr_value_str(msg));
    free(msg);
    return st;
  }
  if (strcmp(method, "waiting") == 0)
    return mgr_request_return(req, mgr_value_int((int64_t)m->n_getters));
  if (strcmp(method, "count") == 0)
    return mgr_request_return(req, mgr_value_int((int64_t)m->len));
  if (strcmp(method, "wait_tick") == 0) {
    if (d->n_tick_waiters == MAX_WAITERS) {
      mgr_request_raise(req, "RuntimeError", "too many tick waiters");
      return MGR_OK;
    }
    return mgr_request_defer(req, &d->tick_waiters[d->n_tick_waiters++]);
  }
  if (strcmp(method, "snapshot") == 0) {
    /* method_to_typeid: the returned list becomes a new Snapshot. */
    mgr_value *list = mgr_value_list();
    size_t i;
    for (i = 0; i < m->len; i++)
      mgr_value_append(list, mgr_value_str(m->messages[i]));
    return mgr_request_return(req, list);
  }
  if (strcmp(method, "fork") == 0) {
    /* method_to_typeid: hand over a ready Mailbox state. */
    mailbox *copy = mailbox_new();
    size_t i;
    mgr_status st;
    if (!copy)
      return MGR_ERR_IO;
    for (i = 0; i < m->len; i++)
      mailbox_push(copy, m->messages[i]);
    d->created++;
    st = mgr_request_return_object(req, copy);
    if (st != MGR_OK)
      mailbox_destroy(d, copy);
    return st;
  }
  if (strcmp(method, "bad") == 0)
    return MGR_ERR_INVALID_ARGUMENT; /* becomes a RuntimeError for the caller */
  mgr_request_raise(req, "AttributeError", method);
  return MGR_OK;
}

static mgr_status snapshot_create(void *userdata, const mgr_value *args,
                                  const mgr_value *kwargs, mgr_request *req,
                                  void **out_object) {
  const mgr_value *items;
  snapshot *s;
  (void)userdata;
  (void)kwargs;
  if (mgr_value_get_item(args, 0, &items) != MGR_OK ||
      mgr_value_type(items) != MGR_VALUE_LIST) {
    mgr_request_raise(req, "TypeError", "Snapshot() needs a list");
    return MGR_ERR_INVALID_ARGUMENT;
  }
  s = malloc(sizeof *s);
  if (!s)
    return MGR_ERR_IO;
  s->items = mgr_value_clone(items);
  *out_object = s;
  return MGR_OK;
}

static void snapshot_destroy(void *userdata, void *object) {
  snapshot *s = object;
  (void)userdata;
  mgr_value_free(s->items);
  free(s);
}

static mgr_status snapshot_call(void *userdata, void *object, const char *method,
                                const mgr_value *args, const mgr_value *kwargs,
                                mgr_request *req) {
  snapshot *s = object;
  size_t len = 0;
  (void)userdata;
  (void)kwargs;
  mgr_value_len(s->items, &len);
  if (strcmp(method, "len") == 0)
    return mgr_request_return(req, mgr_value_int((int64_t)len));
  if (strcmp(method, "item") == 0) {
    const mgr_value *index, *item;
    int64_t i = -1;
    if (mgr_value_get_item(args, 0, &index) != MGR_OK ||
        mgr_value_get_int(index, &i) != MGR_OK) {
      mgr_request_raise(req, "TypeError", "item() needs an int");
      return MGR_OK;
    }
    if (i < 0 || (size_t)i >= len ||
        mgr_value_get_item(s->items, (size_t)i, &item) != MGR_OK) {
      mgr_request_raise(req, "IndexError", "snapshot index out of range");
      return MGR_OK;
    }
    return mgr_request_return(req, mgr_value_clone(item));
  }
  mgr_request_raise(req, "AttributeError", method);
  return MGR_OK;
}

/* The daemon's own periodic work: count ticks, answer wait_tick() callers. */
static void tick(daemon_state *d) {
  size_t i;
  d->ticks++;
  for (i = 0; i < d->n_tick_waiters; i++) {
    mgr_status st = mgr_reply_return(d->tick_waiters[i], mgr_value_int(d->ticks));
    if (st != MGR_OK && st != MGR_ERR_STALE)
      warn_status("answering wait_tick", st);
    mgr_reply_free(d->tick_waiters[i]);
  }
  d->n_tick_waiters = 0;
}

int main(int argc, char **argv) {
  static const char *const mailbox_methods[] = {"put", "get", "pop", "count",
                                                "waiting", "wait_tick", "bad"};
  static const mgr_method_typeid mailbox_results[] = {{"snapshot", "Snapshot"},
                                                      {"fork", "Mailbox"}};
  static const char *const snapshot_methods[] = {"len", "item"};
  const char *address = argc > 1 ? argv[1] : "127.0.0.1:0";
  const char *key = getenv("MGR_AUTHKEY");
  daemon_state d;
  mgr_server_options opts;
  mgr_server *server = NULL;
  mgr_type mailbox_type, snapshot_type;
  struct sigaction sa;
  const char *reason = "?";
  long next_tick;
  mgr_status st;
  size_t i;
  int rc = 0;

  if (!key)
    key = "secret";
  memset(&d, 0, sizeof d);
  if (pipe(sigpipe_fds) != 0 || fcntl(sigpipe_fds[1], F_SETFL, O_NONBLOCK) != 0) {
    perror("host_daemon: pipe");
    return 1;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  mgr_server_options_init(&opts);
  opts.max_connections = 64;
  st = mgr_server_new(address, (const uint8_t *)key, strlen(key), &opts, &server);
  if (st != MGR_OK) {
    warn_status("mgr_server_new", st);
    return 1;
  }
  /* At most 16 requests (the default, 1024, suits a 60 Hz host) or 2 ms of
   * them per turn; at most 16 peers still authenticating. */
  if ((st = mgr_server_set_turn_budget(server, 16, 2000)) != MGR_OK ||
      (st = mgr_server_set_max_preauth_connections(server, 16)) != MGR_OK) {
    warn_status("mgr_server_set_*", st);
    mgr_server_free(server);
    return 1;
  }

  memset(&mailbox_type, 0, sizeof mailbox_type);
  mailbox_type.version = MGR_TYPE_VERSION;
  mailbox_type.exposed = mailbox_methods;
  mailbox_type.exposed_len = sizeof mailbox_methods / sizeof *mailbox_methods;
  mailbox_type.method_to_typeid = mailbox_results;
  mailbox_type.method_to_typeid_len = sizeof mailbox_results / sizeof *mailbox_results;
  mailbox_type.create = mailbox_create;
  mailbox_type.call = mailbox_call;
  mailbox_type.destroy = mailbox_destroy;
  mailbox_type.repr = mailbox_repr;
  mailbox_type.cancel = mailbox_cancel;

  memset(&snapshot_type, 0, sizeof snapshot_type);
  snapshot_type.version = MGR_TYPE_VERSION;
  snapshot_type.exposed = snapshot_methods;
  snapshot_type.exposed_len = sizeof snapshot_methods / sizeof *snapshot_methods;
  snapshot_type.create = snapshot_create;
  snapshot_type.call = snapshot_call;
  snapshot_type.destroy = snapshot_destroy;

  /* Snapshot first: Mailbox.snapshot's results become Snapshots, and a
     method_to_typeid entry must name a type that is registered already. */
  if ((st = mgr_server_register(server, "Snapshot", &snapshot_type, &d)) != MGR_OK ||
      (st = mgr_server_register(server, "Mailbox", &mailbox_type, &d)) != MGR_OK) {
    warn_status("mgr_server_register", st);
    mgr_server_free(server);
    return 1;
  }

  printf("%s\n", mgr_server_address(server));
  fflush(stdout);

  next_tick = now_ms() + TICK_MS;
  for (;;) {
    struct pollfd fds[2];
    long wait = next_tick - now_ms();
    int server_wait = mgr_server_timeout_ms(server);
    if (mgr_server_is_shut_down(server)) {
      reason = "shutdown request";
      break;
    }
    if (wait < 0)
      wait = 0;
    if (server_wait >= 0 && server_wait < wait)
      wait = server_wait;
    /* The last turn left work (mgr_server_timeout_ms said 0 as well): poll
     * without waiting, for signals and our own tick, then take another turn. */
    if (mgr_server_pending(server))
      wait = 0;
    fds[0].fd = mgr_server_fd(server);
    fds[0].events = POLLIN;
    fds[0].revents = 0;
    fds[1].fd = sigpipe_fds[0];
    fds[1].events = POLLIN;
    fds[1].revents = 0;
    if (poll(fds, 2, (int)wait) < 0 && errno != EINTR) {
      perror("host_daemon: poll");
      rc = 1;
      break;
    }
    if (fds[1].revents & POLLIN) {
      reason = "signal";
      break;
    }
    if (now_ms() >= next_tick) {
      tick(&d);
      next_tick = now_ms() + TICK_MS;
    }
    /* Spurious calls are harmless, and a tick's answers are waiting in it. */
    st = mgr_server_process(server);
    if (st != MGR_OK) {
      warn_status("mgr_server_process", st);
      rc = 1;
      break;
    }
    if (mgr_server_pending(server))
      d.pending_turns++;
  }

  for (i = 0; i < d.n_tick_waiters; i++)
    mgr_reply_free(d.tick_waiters[i]);
  mgr_server_free(server); /* destroys every remaining object */
  close(sigpipe_fds[0]);
  close(sigpipe_fds[1]);
  fprintf(stderr, "host_daemon: exiting on %s after %ld ticks; objects created %ld, destroyed %ld; "
                  "%ld turns left work pending\n",
          reason, d.ticks, d.created, d.destroyed, d.pending_turns);
  if (d.created != d.destroyed) {
    fprintf(stderr, "host_daemon: objects leaked\n");
    rc = 1;
  }
  return rc;
}
