#include "registry/http.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <link.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "layerstore/digest.h"
#include "layerstore/errors.h"

using kiln::registry::HttpClient;
using kiln::registry::HttpError;
using kiln::registry::HttpOptions;
using kiln::registry::HttpRequest;
using kiln::registry::HttpResponse;
using kiln::registry::HttpStatusError;

namespace {

void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return;  // the client went away: what it saw is what the test checks
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Waits until the test ends (the server stops) or `limit` passes: a server that stalls.
void wait_for_stop(int stop_fd, std::chrono::milliseconds limit) {
  pollfd p{stop_fd, POLLIN, 0};
  ::poll(&p, 1, static_cast<int>(limit.count()));
}

// Whether `fd` has something to read (or was closed) within `timeout_ms`; false when it has not, or
// when the server is stopping.
bool wait_readable(int fd, int stop_fd, int timeout_ms) {
  pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
  if (::poll(fds, 2, timeout_ms) <= 0 || fds[1].revents) return false;
  return fds[0].revents != 0;
}

// The value of the Content-Length field of a request head, 0 when it has none.
size_t content_length(const std::string& head) {
  std::string lower = head;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t at = lower.find("\r\ncontent-length:");
  return at == std::string::npos ? 0 : std::stoul(head.substr(at + 17));
}

// An HTTP/1.1 server on 127.0.0.1 (an ephemeral port) for the client's tests. By default one
// connection at a time on a thread of its own: `respond` writes whatever bytes it wants for the
// request — a whole answer, a body cut short, nothing for a while — and the connection is then
// closed. With keep_alive, each connection has a thread and serves one request after another until
// the client closes it (the answers must then not say "Connection: close").
class TestServer {
 public:
  // target: the request's path; head: the request line and header fields.
  using Respond =
      std::function<void(int fd, const std::string& target, const std::string& head, int stop_fd)>;

  explicit TestServer(Respond respond, bool keep_alive = false)
      : listener_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)),
        stop_(::eventfd(0, EFD_CLOEXEC)),
        respond_(std::move(respond)),
        keep_alive_(keep_alive) {
    REQUIRE(listener_.valid());
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(listener_.get(), 8) == 0);
    socklen_t length = sizeof address;
    REQUIRE(::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~TestServer() {
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }

  std::string url(std::string_view path) const { return fmt::format("http://127.0.0.1:{}{}", port_, path); }
  int port() const { return port_; }
  std::vector<std::string> heads() {
    std::lock_guard lock(mutex_);
    return heads_;
  }
  // The request bodies received (as much of each as came), in the order of heads().
  std::vector<std::string> bodies() {
    std::lock_guard lock(mutex_);
    return bodies_;
  }
  // Connections accepted so far.
  int connections() const { return connections_; }
  // Waits (at most 10 s) until `n` requests have been received: after a request the client gave
  // up, the server may still be reading it.
  void wait_for_requests(size_t n) {
    for (int i = 0; i < 1000 && heads().size() < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(heads().size() >= n);
  }

 private:
  void serve() {
    std::vector<std::thread> handlers;
    while (true) {
      pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 || fds[1].revents) break;
      kiln::Fd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!connection.valid()) continue;
      ++connections_;
      if (keep_alive_) {
        handlers.emplace_back([this, c = std::move(connection)]() mutable { handle(std::move(c)); });
      } else {
        handle(std::move(connection));
      }
    }
    for (std::thread& t : handlers) t.join();
  }

  void handle(kiln::Fd connection) {
    std::string buffered;
    char buf[65536];
    auto receive = [&](int timeout_ms) {
      if (!wait_readable(connection.get(), stop_.get(), timeout_ms)) return false;
      ssize_t n = ::recv(connection.get(), buf, sizeof buf, 0);
      if (n <= 0) return false;
      buffered.append(buf, static_cast<size_t>(n));
      return true;
    };
    do {
      // A kept-alive connection waits for its next request as long as the client keeps it.
      while (buffered.find("\r\n\r\n") == std::string::npos && receive(keep_alive_ ? 30000 : 5000)) {
      }
      size_t end = buffered.find("\r\n\r\n");
      if (keep_alive_ && end == std::string::npos) return;
      std::string head = end == std::string::npos ? buffered : buffered.substr(0, end + 4);
      buffered.erase(0, head.size());
      size_t wanted = content_length(head);
      while (buffered.size() < wanted && receive(5000)) {
      }
      std::string body = buffered.substr(0, std::min(wanted, buffered.size()));
      buffered.erase(0, body.size());
      size_t start = head.find(' ') + 1;
      std::string target = head.substr(start, head.find(' ', start) - start);
      {
        std::lock_guard lock(mutex_);
        heads_.push_back(head);
        bodies_.push_back(std::move(body));
      }
      respond_(connection.get(), target, head, stop_.get());
    } while (keep_alive_);
  }

  kiln::Fd listener_;
  kiln::Fd stop_;
  Respond respond_;
  bool keep_alive_;
  int port_ = 0;
  std::atomic<int> connections_{0};
  std::mutex mutex_;
  std::vector<std::string> heads_;
  std::vector<std::string> bodies_;
  std::thread thread_;
};

std::string answer(int status, std::string_view reason, const std::vector<std::string>& fields,
                   std::string_view body) {
  std::string out = fmt::format("HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n", status,
                                reason, body.size());
  for (const std::string& field : fields) out += field + "\r\n";
  return out + "\r\n" + std::string(body);
}

using kiln::StringWriter;

// A test's wait on a failure is bounded: nothing here may hang the suite.
template <typename F>
std::chrono::milliseconds timed(F&& f) {
  auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
}

HttpRequest req(std::string url, std::string what = "") {
  HttpRequest request;
  request.url = std::move(url);
  request.what = std::move(what);
  return request;
}

HttpOptions quick() {
  HttpOptions options;
  options.connect_timeout = std::chrono::seconds(5);
  options.stall_timeout = std::chrono::seconds(1);
  return options;
}

}  // namespace

TEST_CASE("a 200 streams its body and reports what BuildKit reads", "[http]") {
  TestServer server([](int fd, const std::string& target, const std::string&, int) {
    if (target == "/files/tool.tgz") {
      send_all(fd, answer(200, "OK",
                          {"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT", "ETag: \"v1\"",
                           "Content-Disposition: attachment; filename=\"named.tgz\""},
                          "hello world\n"));
    }
  });
  HttpClient client(quick());
  StringWriter body;
  HttpResponse response = client.get(req(server.url("/files/tool.tgz")), body);
  CHECK(body.text == "hello world\n");
  CHECK(response.status == 200);
  CHECK(response.final_url == server.url("/files/tool.tgz"));
  CHECK(response.size == 12);
  CHECK(response.content_length == 12u);
  CHECK(response.last_modified == 784111777);
  CHECK(response.last_modified_text == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(response.etag == "\"v1\"");
  CHECK(response.filename == "named.tgz");
  CHECK(response.header("ETAG") == "\"v1\"");
  CHECK_FALSE(response.header("x-absent"));
}

TEST_CASE("redirects are followed, to a bound", "[http]") {
  TestServer server([](int fd, const std::string& target, const std::string&, int) {
    if (target == "/old") send_all(fd, answer(302, "Found", {"Location: /middle"}, "moved"));
    if (target == "/middle") send_all(fd, answer(301, "Moved Permanently", {"Location: /new"}, ""));
    if (target == "/new")
      send_all(fd, answer(200, "OK", {"Last-Modified: Thu, 01 Jan 1970 00:01:00 GMT"}, "new"));
    if (target == "/loop") send_all(fd, answer(302, "Found", {"Location: /loop"}, ""));
    if (target == "/to-ftp") send_all(fd, answer(302, "Found", {"Location: ftp://127.0.0.1/x"}, ""));
  });
  HttpClient client(quick());
  StringWriter body;
  HttpResponse response = client.get(req(server.url("/old")), body);
  CHECK(body.text == "new");  // the redirects' own bodies are not part of it
  CHECK(response.final_url == server.url("/new"));
  CHECK(response.last_modified == 60);

  HttpOptions options = quick();
  options.max_redirects = 3;
  HttpClient bounded(options);
  StringWriter ignored;
  try {
    bounded.get(req(server.url("/loop"), "ADD `" + server.url("/loop") + "`"), ignored);
    FAIL("a redirect loop must fail");
  } catch (const HttpError& e) {
    CHECK(std::string(e.what()) == "ADD `" + server.url("/loop") + "`: stopped after 3 redirects");
    CHECK_FALSE(e.temporary());
  }
  CHECK_THROWS_WITH(client.get(req(server.url("/to-ftp")), ignored),
                    "GET `" + server.url("/to-ftp") +
                        "`: redirected to `ftp://127.0.0.1/x`: only http and "
                        "https are followed");
}

TEST_CASE("an error status is a typed error with the server's explanation", "[http]") {
  TestServer server([](int fd, const std::string& target, const std::string&, int) {
    if (target == "/missing") send_all(fd, answer(404, "Nope", {}, "no such file\n"));
    if (target == "/busy") send_all(fd, answer(503, "Busy", {}, ""));
  });
  HttpClient client(quick());
  StringWriter body;
  std::string url = server.url("/missing");
  try {
    client.get(req(url, "ADD `" + url + "`"), body);
    FAIL("a 404 must fail");
  } catch (const HttpStatusError& e) {
    // Go's reason phrase, not the server's.
    CHECK(std::string(e.what()) == "ADD `" + url + "`: HTTP 404 Not Found");
    CHECK(e.status() == 404);
    CHECK(e.body() == "no such file\n");
    CHECK_FALSE(e.temporary());
  }
  CHECK(body.text.empty());
  try {
    client.get(req(server.url("/busy")), body);
    FAIL("a 503 must fail");
  } catch (const HttpStatusError& e) {
    CHECK(std::string(e.what()) == "GET `" + server.url("/busy") + "`: HTTP 503 Service Unavailable");
    CHECK(e.temporary());
  }
}

TEST_CASE("a body shorter than its Content-Length is an error", "[http]") {
  TestServer server([](int fd, const std::string&, const std::string&, int) {
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + std::string(40, 'x'));
  });
  HttpClient client(quick());
  StringWriter body;
  try {
    client.get(req(server.url("/short")), body);
    FAIL("a truncated body must fail");
  } catch (const HttpError& e) {
    CHECK(std::string(e.what()) ==
          "GET `" + server.url("/short") + "`: connection closed after 40 of 100 bytes");
    CHECK(e.temporary());
  }
}

TEST_CASE("a server that stops sending is given up after the stall timeout", "[http]") {
  TestServer server([](int fd, const std::string& target, const std::string&, int stop_fd) {
    if (target == "/slow-body") send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    // "/silent": the request is read, and nothing is ever answered.
    wait_for_stop(stop_fd, std::chrono::seconds(30));
  });
  HttpClient client(quick());  // stall_timeout: 1 s
  for (const char* path : {"/slow-body", "/silent"}) {
    INFO(path);
    StringWriter body;
    auto took = timed([&] {
      try {
        client.get(req(server.url(path)), body);
        FAIL("a stall must fail");
      } catch (const HttpError& e) {
        CHECK(std::string(e.what()) == "GET `" + server.url(path) + "`: stalled: nothing received for 1 s");
        CHECK(e.temporary());
      }
    });
    CHECK(took < std::chrono::seconds(20));
  }
}

TEST_CASE("a refused connection and a refused scheme", "[http]") {
  // A port that was just free: bound, then closed.
  int port;
  {
    TestServer closed([](int, const std::string&, const std::string&, int) {});
    port = closed.port();
  }
  HttpClient client(quick());
  StringWriter body;
  std::string url = fmt::format("http://127.0.0.1:{}/x", port);
  try {
    client.get(req(url), body);
    FAIL("nothing listens there");
  } catch (const HttpError& e) {
    CHECK(std::string(e.what()) ==
          fmt::format("GET `{}`: connect to 127.0.0.1 port {}: Connection refused", url, port));
    CHECK(e.temporary());
  }
  // libcurl is linked without LDAP and RTMP (cmake/curl_unlinked.cpp): they must never be reached.
  for (const char* other :
       {"ldap://127.0.0.1/x", "rtmp://127.0.0.1/x", "ftp://127.0.0.1/x", "file:///etc/passwd"}) {
    CHECK_THROWS_WITH(client.get(req(other), body),
                      fmt::format("GET `{}`: only http and https URLs are supported", other));
  }
  CHECK(body.text.empty());
}

TEST_CASE("a conditional request: the fields sent, a 304 returned with no body", "[http]") {
  TestServer server([](int fd, const std::string&, const std::string& head, int) {
    if (head.find("If-None-Match: \"v1\"\r\n") != std::string::npos) {
      send_all(fd, "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n");
    } else {
      send_all(fd, answer(200, "OK", {"ETag: \"v2\""}, "fresh"));
    }
  });
  HttpOptions options = quick();
  options.user_agent = "kiln-test";
  HttpClient client(options);
  StringWriter body;
  HttpRequest request = req(server.url("/f"));
  request.headers = {"If-None-Match: \"v1\""};
  HttpResponse response = client.get(request, body);
  CHECK(response.status == 304);
  CHECK(response.etag == "\"v1\"");
  CHECK(body.text.empty());
  CHECK(server.heads().back().find("User-Agent: kiln-test\r\n") != std::string::npos);
  response = client.get(req(server.url("/f")), body);
  CHECK(response.status == 200);
  CHECK(body.text == "fresh");
}

TEST_CASE("gzip is decoded only when asked for", "[http]") {
  static const char kGzip[] =
      "\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xcb\x48\xcd\xc9\xc9\xd7\x51\x48\xaf\xca\x2c\xe0\x02\x00\x86"
      "\x1f"
      "\x82\xa4\x0c\x00\x00\x00";
  const std::string gzipped(kGzip, sizeof kGzip - 1);
  TestServer server([&](int fd, const std::string&, const std::string& head, int) {
    if (head.find("Accept-Encoding: gzip\r\n") != std::string::npos) {
      send_all(fd, answer(200, "OK", {"Content-Encoding: gzip"}, gzipped));
    } else {
      send_all(fd, answer(200, "OK", {}, gzipped));
    }
  });
  HttpClient client(quick());
  StringWriter decoded, raw;
  HttpRequest request = req(server.url("/z"));
  request.decode_gzip = true;
  CHECK(client.get(request, decoded).size == 12);
  CHECK(decoded.text == "hello, gzip\n");
  client.get(req(server.url("/z")), raw);
  CHECK(raw.text == gzipped);
}

TEST_CASE("what the body's writer throws comes out unchanged, and a transfer can be canceled", "[http]") {
  TestServer server([](int fd, const std::string& target, const std::string&, int stop_fd) {
    if (target == "/big") send_all(fd, answer(200, "OK", {}, std::string(1 << 20, 'b')));
    if (target == "/hang") wait_for_stop(stop_fd, std::chrono::seconds(30));
  });
  struct Refusing : kiln::Writer {
    void write(std::span<const std::byte>) override { throw kiln::InvalidInputError("too much"); }
  } refusing;
  HttpClient client(quick());
  CHECK_THROWS_AS(client.get(req(server.url("/big")), refusing), kiln::InvalidInputError);

  kiln::Fd cancel(::eventfd(0, EFD_CLOEXEC));
  HttpOptions options;
  options.stall_timeout = std::chrono::seconds(30);
  options.cancel_fd = cancel.get();
  HttpClient cancelable(options);
  std::thread canceler([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    uint64_t one = 1;
    (void)!::write(cancel.get(), &one, sizeof one);
  });
  StringWriter body;
  auto took = timed([&] {
    CHECK_THROWS_WITH(cancelable.get(req(server.url("/hang")), body),
                      "GET `" + server.url("/hang") + "`: canceled");
  });
  canceler.join();
  CHECK(took < std::chrono::seconds(20));

  // A request's own cancel descriptor, on a client without one: the same, for that request alone.
  kiln::Fd cancel_one(::eventfd(0, EFD_CLOEXEC));
  HttpOptions plain;
  plain.stall_timeout = std::chrono::seconds(30);
  HttpClient shared(plain);
  HttpRequest hang = req(server.url("/hang"));
  hang.cancel_fd = cancel_one.get();
  std::thread canceler_one([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    uint64_t one = 1;
    (void)!::write(cancel_one.get(), &one, sizeof one);
  });
  took = timed(
      [&] { CHECK_THROWS_WITH(shared.get(hang, body), "GET `" + server.url("/hang") + "`: canceled"); });
  canceler_one.join();
  CHECK(took < std::chrono::seconds(20));
  // The next request of that client is not canceled by it (another server: this one is still
  // busy with the hanging answer).
  TestServer other([](int fd, const std::string&, const std::string&, int) {
    send_all(fd, answer(200, "OK", {}, std::string(1 << 20, 'b')));
  });
  StringWriter big;
  shared.get(req(other.url("/big")), big);
  CHECK(big.text.size() == 1u << 20);
}

TEST_CASE("memory does not grow with the download", "[http]") {
  static constexpr size_t kSize = 256 << 20;
  TestServer server([](int fd, const std::string&, const std::string&, int) {
    send_all(fd, fmt::format("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", kSize));
    std::string chunk(1 << 20, 'm');
    for (size_t sent = 0; sent < kSize; sent += chunk.size()) send_all(fd, chunk);
  });
  auto rss_kib = [] {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
    }
    return 0L;
  };
  struct Sampling : kiln::Writer {
    std::function<long()> rss;
    long peak = 0;
    uint64_t bytes = 0;
    size_t largest = 0;
    void write(std::span<const std::byte> data) override {
      bytes += data.size();
      largest = std::max(largest, data.size());
      if ((bytes >> 20) != ((bytes - data.size()) >> 20)) peak = std::max(peak, rss());  // once a MiB
    }
  } sampling;
  sampling.rss = rss_kib;
  HttpClient client(quick());
  long before = rss_kib();
  HttpResponse response = client.get(req(server.url("/huge")), sampling);
  CHECK(response.size == kSize);
  CHECK(sampling.bytes == kSize);
  CHECK(sampling.largest <= 256u << 10);  // the batch gathered from libcurl's pieces, never more
  // The server's 1 MiB chunk, libcurl's buffers and the batch; a body held in memory would be 256 MiB.
  CHECK(sampling.peak - before < 16 << 10);
}

TEST_CASE("one libcrypto in the process: libcurl's", "[http]") {
  // registry/curl_api.h: libcurl.so.4 brings libcrypto.so.3; kiln's digests run on nettle and
  // link no OpenSSL of their own, static or shared.
  kiln::sha256_of("before any download");
  HttpClient client(quick());
  int copies = 0;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* count) {
        if (std::string_view(info->dlpi_name).find("/libcrypto.so") != std::string_view::npos)
          ++*static_cast<int*>(count);
        return 0;
      },
      &copies);
  CHECK(copies == 1);
  // Nothing of OpenSSL is linked into the executable: no static copy to find by its symbols...
  CHECK(::dlsym(RTLD_DEFAULT, "SHA256_Update") == nullptr);
  CHECK(::dlsym(RTLD_DEFAULT, "OPENSSL_init_crypto") == nullptr);
  // ...and the one copy is the shared library that libcurl loaded.
  void* shared = ::dlopen("libcrypto.so.3", RTLD_NOW | RTLD_NOLOAD);
  CHECK(shared != nullptr);
  if (shared) ::dlclose(shared);
}

namespace {

// Bytes that are not all alike, so that a byte out of place shows.
std::string pattern(size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>((i * 7 + i / 251) % 256);
  return out;
}

bool has_field(const std::string& head, std::string_view name) {
  std::string lower = head;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find(fmt::format("\r\n{}:", name)) != std::string::npos;
}

std::string kept_answer(int status, std::string_view reason, std::string_view body) {
  return fmt::format("HTTP/1.1 {} {}\r\nContent-Length: {}\r\n\r\n{}", status, reason, body.size(), body);
}

}  // namespace

TEST_CASE("PUT, POST and PATCH stream their body: its bytes, its length, no Expect", "[http]") {
  TestServer server([](int fd, const std::string&, const std::string&, int) {
    send_all(fd, answer(201, "Created", {"Location: /v2/x/blobs/uploads/1"}, ""));
  });
  // Larger than libcurl's 1 MiB upload buffer, so that it is read in several pieces; the reader
  // has more than upload_size bytes, of which only upload_size may go.
  const std::string data = pattern((3 << 20) + 12345);
  HttpClient client(quick());
  for (const char* method : {"PUT", "POST", "PATCH"}) {
    INFO(method);
    std::string more = data + "NOT-TO-BE-SENT";
    kiln::StringReader reader(more);
    HttpRequest request = req(server.url("/upload"));
    request.method = method;
    request.upload = &reader;
    request.upload_size = data.size();
    HttpResponse response = client.perform(request, nullptr);
    CHECK(response.status == 201);
    CHECK(response.header("location") == "/v2/x/blobs/uploads/1");
    std::string head = server.heads().back();
    CHECK(head.starts_with(fmt::format("{} /upload HTTP/1.1\r\n", method)));
    CHECK(head.find(fmt::format("\r\nContent-Length: {}\r\n", data.size())) != std::string::npos);
    CHECK_FALSE(has_field(head, "expect"));
    CHECK_FALSE(has_field(head, "transfer-encoding"));
    std::string body = server.bodies().back();
    CHECK(body.size() == data.size());
    CHECK(body == data);
  }
  // Without a reader, an empty body: Content-Length 0.
  HttpRequest empty = req(server.url("/upload"));
  empty.method = "PUT";
  CHECK(client.perform(empty, nullptr).status == 201);
  CHECK(server.heads().back().find("\r\nContent-Length: 0\r\n") != std::string::npos);
  CHECK(server.bodies().back().empty());
}

// on_upload's CURL_READFUNC_ABORT comes back as CURLE_ABORTED_BY_CALLBACK: the message is kiln's
// reason, not libcurl's "operation aborted by callback".
TEST_CASE("a request body that ends before upload_size is an error", "[http]") {
  TestServer server([](int fd, const std::string&, const std::string&, int) {
    send_all(fd, answer(201, "Created", {}, ""));
  });
  HttpClient client(quick());
  std::string data = pattern(1000);
  kiln::StringReader reader(data);
  HttpRequest request = req(server.url("/short-upload"));
  request.method = "PUT";
  request.upload = &reader;
  request.upload_size = data.size() + 10;
  try {
    client.perform(request, nullptr);
    FAIL("a short body must fail");
  } catch (const HttpError& e) {
    CHECK(std::string(e.what()) ==
          "PUT `" + server.url("/short-upload") + "`: the request body ended 10 bytes early");
  }
}

TEST_CASE("what the body's reader throws while uploading comes out unchanged", "[http]") {
  TestServer server([](int fd, const std::string&, const std::string&, int) {
    send_all(fd, answer(201, "Created", {}, ""));
  });
  // Gives 200 KiB, then fails as a blob file read would.
  struct Failing : kiln::Reader {
    size_t given = 0;
    size_t read(std::span<std::byte> buf) override {
      if (given >= 200 << 10) throw kiln::SystemError("read `blob`", EIO);
      size_t n = std::min<size_t>(buf.size(), (200 << 10) - given);
      std::fill_n(buf.begin(), n, std::byte{'u'});
      given += n;
      return n;
    }
  } failing;
  HttpClient client(quick());
  HttpRequest request = req(server.url("/upload"));
  request.method = "PATCH";
  request.upload = &failing;
  request.upload_size = 1 << 20;
  try {
    client.perform(request, nullptr);
    FAIL("the reader's error must come out");
  } catch (const kiln::SystemError& e) {
    CHECK(std::string(e.what()) == std::string(kiln::SystemError("read `blob`", EIO).what()));
    CHECK(e.code() == EIO);
  }
  CHECK(failing.given == 200u << 10);
  // The server saw less than the announced length; the client works on.
  server.wait_for_requests(1);
  CHECK(server.bodies().back().size() < 1u << 20);
  CHECK(client.perform(req(server.url("/after")), nullptr).status == 201);
}

TEST_CASE("HEAD: the status and the fields, no body awaited", "[http]") {
  TestServer server([](int fd, const std::string& target, const std::string&, int) {
    // A HEAD answer announces the length of the body a GET would get, and sends none.
    if (target == "/blob") {
      send_all(fd,
               "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nDocker-Content-Digest: sha256:abc\r\n"
               "Connection: close\r\n\r\n");
    } else {
      send_all(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 77\r\nConnection: close\r\n\r\n");
    }
  });
  HttpClient client(quick());
  StringWriter body;
  HttpRequest request = req(server.url("/blob"));
  request.method = "HEAD";
  std::chrono::milliseconds took;
  HttpResponse response;
  took = timed([&] { response = client.perform(request, &body); });
  CHECK(took < std::chrono::seconds(1));  // not a stall waiting for 1234 bytes
  CHECK(response.status == 200);
  CHECK(response.content_length == 1234u);
  CHECK(response.header("docker-content-digest") == "sha256:abc");
  CHECK(response.size == 0);
  CHECK(body.text.empty());
  CHECK(server.heads().back().starts_with("HEAD /blob HTTP/1.1\r\n"));

  HttpRequest missing = req(server.url("/missing"));
  missing.method = "HEAD";
  missing.throw_on_error_status = false;
  CHECK(client.perform(missing, &body).status == 404);
  CHECK(body.text.empty());
}

TEST_CASE("throw_on_error_status off: the status and the start of the body are returned", "[http]") {
  const std::string big = pattern(100 << 10);
  TestServer server([&](int fd, const std::string& target, const std::string&, int) {
    if (target == "/denied") {
      send_all(fd, answer(401, "Unauthorized", {"WWW-Authenticate: Bearer realm=\"http://auth/token\""},
                          "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}"));
    }
    if (target == "/big-error") send_all(fd, answer(500, "Oops", {}, big));
    if (target == "/fine") send_all(fd, answer(200, "OK", {}, "fine"));
  });
  HttpClient client(quick());
  StringWriter body;
  HttpRequest request = req(server.url("/denied"));
  request.throw_on_error_status = false;
  HttpResponse response = client.perform(request, &body);
  CHECK(response.status == 401);
  CHECK(response.error_body == "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}");
  CHECK(response.header("www-authenticate") == "Bearer realm=\"http://auth/token\"");
  CHECK(body.text.empty());  // an error's body is not the body

  // A long error body: its start, capped, and still no exception.
  request.url = server.url("/big-error");
  response = client.perform(request, &body);
  CHECK(response.status == 500);
  CHECK(response.error_body == big.substr(0, HttpStatusError::kMaxErrorBody));
  CHECK(body.text.empty());

  // A success is as with the default.
  request.url = server.url("/fine");
  response = client.perform(request, &body);
  CHECK(response.status == 200);
  CHECK(response.error_body.empty());
  CHECK(body.text == "fine");
}

TEST_CASE("range_start asks for the rest, and skips what a server sends anyway", "[http]") {
  const std::string whole = pattern(1 << 20);
  TestServer server([&](int fd, const std::string& target, const std::string& head, int) {
    if (target == "/ignores-range") send_all(fd, answer(200, "OK", {}, whole));
    if (target == "/honours-range") {
      size_t at = head.find("Range: bytes=");
      size_t from = at == std::string::npos ? 0 : std::stoul(head.substr(at + 13));
      send_all(fd,
               answer(206, "Partial Content",
                      {fmt::format("Content-Range: bytes {}-{}/{}", from, whole.size() - 1, whole.size())},
                      std::string_view(whole).substr(from)));
    }
  });
  HttpClient client(quick());
  // Past libcurl's 128 KiB buffer: the bytes to drop span several pieces of the body.
  for (uint64_t from : {uint64_t{5}, uint64_t{300001}}) {
    INFO(from);
    for (const char* path : {"/ignores-range", "/honours-range"}) {
      INFO(path);
      StringWriter body;
      HttpRequest request = req(server.url(path));
      request.range_start = from;
      HttpResponse response = client.get(request, body);
      CHECK(response.status == (std::string_view(path) == "/ignores-range" ? 200 : 206));
      CHECK(server.heads().back().find(fmt::format("\r\nRange: bytes={}-\r\n", from)) != std::string::npos);
      CHECK(response.size == whole.size() - from);
      CHECK(body.text.size() == whole.size() - from);
      CHECK(body.text == whole.substr(from));
    }
  }
  // Without range_start, no Range field.
  StringWriter body;
  client.get(req(server.url("/ignores-range")), body);
  CHECK_FALSE(has_field(server.heads().back(), "range"));
  CHECK(body.text == whole);
}

TEST_CASE(
    "a client reused by another thread keeps its connection, and clients sharing state do not share "
    "connections",
    "[http]") {
  TestServer server([](int fd, const std::string& target, const std::string&,
                       int) { send_all(fd, kept_answer(200, "OK", target)); },
                    /*keep_alive=*/true);
  HttpOptions options = quick();
  options.shared = std::make_shared<kiln::registry::SharedHttpState>();
  HttpClient first(options), second(options);
  StringWriter a, b, c;
  std::thread([&] { first.get(req(server.url("/a")), a); }).join();
  // The same client on another thread: its idle connection serves again.
  std::thread([&] { first.get(req(server.url("/b")), b); }).join();
  CHECK(server.connections() == 1);
  // Another client: a connection of its own (libcurl's shared connection cache is not used, see
  // SharedHttpState).
  std::thread([&] { second.get(req(server.url("/c")), c); }).join();
  CHECK(a.text == "/a");
  CHECK(b.text == "/b");
  CHECK(c.text == "/c");
  CHECK(server.heads().size() == 3);
  CHECK(server.connections() == 2);
}
