// cpp_client: uses host_daemon's Mailbox through mgr.h from C++, with small RAII
// wrappers (unique_ptr deleters for owned handles, exceptions for failures).
//
// Usage: cpp_client ADDRESS [--shutdown]  (authkey from $MGR_AUTHKEY or "secret")
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

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
    if (argc > 2 && std::string(argv[2]) == "--shutdown") client.shutdown();
  } catch (const std::exception &e) {
    std::cerr << "cpp_client: " << e.what() << "\n";
    return 1;
  }
  if (failures) return 1;
  std::cout << "cpp_client: all checks passed\n";
  return 0;
}
