// cpp_client: uses host_daemon's Mailbox through mgr.h from C++, with small RAII
// wrappers (unique_ptr deleters for owned handles, exceptions for failures):
// the blocking client (Client, Proxy) and the non-blocking one (NbClient,
// NbProxy: calls take a std::function run later from process(), driven here by
// a poll() loop).
//
// Usage: cpp_client ADDRESS [--shutdown]  (authkey from $MGR_AUTHKEY or "secret")
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include <poll.h>

#include "mgr.h"

namespace mgr {

// Any failure of the C API, with its status and (for remote errors) kind.
struct Error : std::runtime_error {
  mgr_status status;
  std::string kind;
  Error(mgr_status s, const std::string &what)
      : std::runtime_error(what + ": " + mgr_status_name(s) + ": " + mgr_last_error()),
        status(s), kind(mgr_last_error_kind()) {}
};

inline void check(mgr_status s, const char *what) {
  if (s != MGR_OK) throw Error(s, what);
}

struct ValueFree { void operator()(mgr_value *v) const { mgr_value_free(v); } };
struct ProxyFree { void operator()(mgr_proxy *p) const { mgr_proxy_free(p); } };
struct ClientFree { void operator()(mgr_client *c) const { mgr_client_free(c); } };
struct StringFree { void operator()(char *s) const { mgr_string_free(s); } };

// An owned value.
class Value {
 public:
  explicit Value(mgr_value *v) : v_(v) {
    if (!v_) throw Error(MGR_ERR_NULL_ARGUMENT, "value");
  }
  static Value of(std::int64_t i) { return Value(mgr_value_int(i)); }
  static Value of(const std::string &s) { return Value(mgr_value_str_len(s.data(), s.size())); }
  static Value tuple() { return Value(mgr_value_tuple()); }

  // Appends a value (moved in: the tree takes ownership).
  Value &&push(Value item) && {
    check(mgr_value_append(v_.get(), item.release()), "append");
    return std::move(*this);
  }
  std::int64_t as_int() const {
    std::int64_t i = 0;
    check(mgr_value_get_int(v_.get(), &i), "as_int");
    return i;
  }
  std::string as_str() const {
    const char *p = nullptr;
    std::size_t n = 0;
    check(mgr_value_get_str(v_.get(), &p, &n), "as_str");
    return std::string(p, n);
  }
  std::string repr() const {
    std::unique_ptr<char, StringFree> s(mgr_value_repr(v_.get()));
    return s ? std::string(s.get()) : std::string("?");
  }
  const mgr_value *get() const { return v_.get(); }
  mgr_value *release() { return v_.release(); }

 private:
  std::unique_ptr<mgr_value, ValueFree> v_;
};

// A reference to a shared object; destroying it releases the reference.
class Proxy {
 public:
  explicit Proxy(mgr_proxy *p) : p_(p) {}
  Value call(const char *method, const Value *args = nullptr) {
    mgr_value *out = nullptr;
    check(mgr_call(p_.get(), method, args ? args->get() : nullptr, nullptr, &out), method);
    return Value(out);
  }
  Proxy call_proxy(const char *method) {
    mgr_proxy *out = nullptr;
    check(mgr_call_proxy(p_.get(), method, nullptr, nullptr, &out), method);
    return Proxy(out);
  }
  std::string typeid_name() const { return mgr_proxy_typeid(p_.get()); }

 private:
  std::unique_ptr<mgr_proxy, ProxyFree> p_;
};

// A connection to a manager.
class Client {
 public:
  Client(const std::string &address, const std::string &key) {
    mgr_client *c = nullptr;
    check(mgr_client_connect(address.c_str(), reinterpret_cast<const std::uint8_t *>(key.data()),
                             key.size(), &c),
          "connect");
    c_.reset(c);
  }
  Proxy create(const char *type_id) {
    mgr_proxy *p = nullptr;
    check(mgr_create(c_.get(), type_id, nullptr, nullptr, &p), "create");
    return Proxy(p);
  }
  std::size_t number_of_objects() {
    std::size_t n = 0;
    check(mgr_client_number_of_objects(c_.get(), &n), "number_of_objects");
    return n;
  }
  void shutdown() { check(mgr_client_shutdown(c_.get()), "shutdown"); }

 private:
  std::unique_ptr<mgr_client, ClientFree> c_;
};

struct NbProxyFree { void operator()(mgr_nb_proxy *p) const { mgr_nb_proxy_free(p); } };
struct NbClientFree { void operator()(mgr_nb_client *c) const { mgr_nb_client_free(c); } };

// A reference held through an NbClient; destroying it queues the decref.
class NbProxy {
 public:
  NbProxy() = default;
  explicit NbProxy(mgr_nb_proxy *p) : p_(p) {}
  explicit operator bool() const { return p_ != nullptr; }
  std::string typeid_name() const { return p_ ? mgr_nb_proxy_typeid(p_.get()) : ""; }
  std::uint64_t id() const { return mgr_nb_proxy_id(p_.get()); }
  // A reference value naming the object, to pass it as an argument.
  Value to_value() const { return Value(mgr_nb_proxy_to_value(p_.get())); }
  const mgr_nb_proxy *get() const { return p_.get(); }

 private:
  std::unique_ptr<mgr_nb_proxy, NbProxyFree> p_;
};

// What a non-blocking call gives its callback: a status (MGR_OK or why not),
// the remote error's kind and message, and the value or proxy it returned.
struct NbResult {
  mgr_status status = MGR_OK;
  std::string kind, message;
  std::unique_ptr<mgr_value, ValueFree> value;
  NbProxy proxy;
  // False when the result comes from the client's destruction: do not call it.
  bool client_alive = true;
  bool ok() const { return status == MGR_OK; }
  std::int64_t as_int() const {
    std::int64_t i = 0;
    check(value ? mgr_value_get_int(value.get(), &i) : MGR_ERR_WRONG_TYPE, "as_int");
    return i;
  }
  std::string as_str() const {
    const char *p = nullptr;
    std::size_t n = 0;
    check(value ? mgr_value_get_str(value.get(), &p, &n) : MGR_ERR_WRONG_TYPE, "as_str");
    return std::string(p, n);
  }
};

// The non-blocking client: connect, create and call return at once; each
// callback runs exactly once, later, from process() (or the destructor, with
// client_alive false). Poll fd() for events() with at most timeout_ms().
class NbClient {
 public:
  using Done = std::function<void(NbResult &&)>;

  NbClient(const std::string &address, const std::string &key) {
    mgr_nb_client *c = nullptr;
    check(mgr_nb_client_connect(address.c_str(), reinterpret_cast<const std::uint8_t *>(key.data()),
                                key.size(), nullptr, &c),
          "nb connect");
    c_.reset(c);
  }
  void create(const char *type_id, Done done) {
    check(mgr_nb_create(c_.get(), type_id, nullptr, nullptr, trampoline, wrap(std::move(done))),
          "nb create");
  }
  void call(const NbProxy &p, const char *method, const Value *args, Done done) {
    Done *d = wrap(std::move(done));
    mgr_status s = mgr_nb_call(c_.get(), p.get(), method, args ? args->get() : nullptr, nullptr,
                               trampoline, d);
    if (s != MGR_OK) delete d;  // refused: the callback never runs
    check(s, method);
  }
  void call_public(const char *method, Done done) {
    Done *d = wrap(std::move(done));
    mgr_status s = mgr_nb_public(c_.get(), method, nullptr, trampoline, d);
    if (s != MGR_OK) delete d;
    check(s, method);
  }
  int fd() const { return mgr_nb_client_fd(c_.get()); }
  short poll_events() const {
    std::uint32_t e = mgr_nb_client_events(c_.get());
    return static_cast<short>(((e & MGR_NB_READ) ? POLLIN : 0) | ((e & MGR_NB_WRITE) ? POLLOUT : 0));
  }
  int timeout_ms() const { return mgr_nb_client_timeout_ms(c_.get()); }
  std::size_t pending() const { return mgr_nb_client_pending(c_.get()); }
  mgr_nb_phase phase() const { return mgr_nb_client_phase(c_.get()); }
  // Runs ready work and callbacks; returns whether it did anything.
  bool process() {
    bool did = false;
    check(mgr_nb_client_process(c_.get(), &did), "nb process");
    return did;
  }

 private:
  static Done *wrap(Done done) { return new Done(std::move(done)); }
  static void trampoline(void *userdata, mgr_nb_client *client, mgr_status status,
                         mgr_value *value, mgr_nb_proxy *proxy) {
    std::unique_ptr<Done> done(static_cast<Done *>(userdata));
    NbResult r;
    r.status = status;
    r.value.reset(value);
    r.proxy = NbProxy(proxy);
    r.client_alive = client != nullptr;
    if (status != MGR_OK) {
      r.kind = mgr_last_error_kind();
      r.message = mgr_last_error();
    }
    try {
      (*done)(std::move(r));
    } catch (...) {
      // Exceptions must not cross the C callback.
    }
  }
  std::unique_ptr<mgr_nb_client, NbClientFree> c_;
};

}  // namespace mgr

static int failures = 0;

static void expect(bool ok, const std::string &what) {
  if (!ok) {
    std::cerr << "cpp_client: FAILED: " << what << "\n";
    ++failures;
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    std::cerr << "usage: cpp_client ADDRESS [--shutdown]\n";
    return 2;
  }
  const char *env_key = std::getenv("MGR_AUTHKEY");
  const std::string key = env_key ? env_key : "secret";
  try {
    mgr::Client client(argv[1], key);
    const std::size_t before = client.number_of_objects();
    {
      mgr::Proxy box = client.create("Mailbox");
      expect(box.typeid_name() == "Mailbox", "typeid");
      mgr::Value args = mgr::Value::tuple().push(mgr::Value::of("from C++"));
      expect(box.call("put", &args).as_int() == 1, "put returns the count");
      expect(box.call("get").as_str() == "from C++", "get returns what was put");
      const std::int64_t tick = box.call("wait_tick").as_int();
      expect(tick >= 1, "wait_tick answered by the daemon's timer, got " + std::to_string(tick));
      try {
        box.call("pop");
        expect(false, "pop on an empty mailbox must raise");
      } catch (const mgr::Error &e) {
        expect(e.status == MGR_ERR_REMOTE && e.kind == "IndexError", std::string("pop raised ") + e.what());
      }
      box.call("put", &args);
      mgr::Proxy snap = box.call_proxy("snapshot");
      expect(snap.typeid_name() == "Snapshot", "snapshot typeid");
      expect(snap.call("len").as_int() == 1, "snapshot len");
      mgr::Value zero = mgr::Value::tuple().push(mgr::Value::of(0));
      expect(snap.call("item", &zero).repr() == "'from C++'", "snapshot item repr");
      expect(client.number_of_objects() == before + 2, "two objects alive");
    }
    expect(client.number_of_objects() == before, "proxies released on scope exit");
    {
      // The same Mailbox calls through the non-blocking client, in a poll() loop.
      mgr::NbClient nb(argv[1], key);
      mgr::NbProxy box;
      int answered = 0;
      nb.create("Mailbox", [&](mgr::NbResult &&r) {
        expect(r.ok() && r.proxy.typeid_name() == "Mailbox" && r.proxy.id() != 0 &&
                   r.proxy.to_value().repr().find("Mailbox") != std::string::npos,
               "nb create Mailbox");
        box = std::move(r.proxy);
        if (!box) return;
        for (int i = 0; i < 3; ++i) {
          mgr::Value args = mgr::Value::tuple().push(mgr::Value::of("nb" + std::to_string(i)));
          nb.call(box, "put", &args, [&, i](mgr::NbResult &&p) {
            expect(p.ok() && p.as_int() == i + 1, "nb put count");
            ++answered;
          });
        }
        for (int i = 0; i < 3; ++i)
          nb.call(box, "get", nullptr, [&, i](mgr::NbResult &&g) {
            expect(g.ok() && g.as_str() == "nb" + std::to_string(i), "nb get in order");
            ++answered;
          });
        nb.call(box, "pop", nullptr, [&](mgr::NbResult &&p) {
          expect(p.status == MGR_ERR_REMOTE && p.kind == "IndexError", "nb pop raises IndexError");
          ++answered;
        });
      });
      for (int guard = 0; guard < 100000 && (answered < 7 || nb.pending() > 0); ++guard) {
        pollfd pfd{nb.fd(), nb.poll_events(), 0};
        const int t = nb.timeout_ms();
        poll(&pfd, 1, t < 0 || t > 50 ? 50 : t);
        nb.process();
      }
      expect(answered == 7, "every nb call answered, got " + std::to_string(answered));
      expect(nb.phase() == MGR_NB_READY, "nb client ready");
    }
    if (argc > 2 && std::string(argv[2]) == "--shutdown") client.shutdown();
  } catch (const std::exception &e) {
    std::cerr << "cpp_client: " << e.what() << "\n";
    return 1;
  }
  if (failures) return 1;
  std::cout << "cpp_client: all checks passed\n";
  return 0;
}
