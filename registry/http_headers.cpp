#include "registry/http_headers.h"

#include <array>
#include <cctype>
#include <map>
#include <utility>

namespace kiln::registry {
namespace {

constexpr std::array<std::string_view, 7> kShortDays = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<std::string_view, 7> kLongDays = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                                       "Thursday", "Friday", "Saturday"};
constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

bool equal_fold(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

// A left-to-right reader of one date string; every step fails (returns false) without throwing.
class DateScanner {
 public:
  explicit DateScanner(std::string_view text) : text_(text) {}
  bool done() const { return pos_ == text_.size(); }
  bool literal(std::string_view expected) {
    if (text_.substr(pos_, expected.size()) != expected) return false;
    pos_ += expected.size();
    return true;
  }
  // One of `names`, compared without case as Go's time.Parse compares them; returns its index.
  template <size_t N>
  std::optional<int> name(const std::array<std::string_view, N>& names) {
    for (size_t i = 0; i < N; ++i) {
      if (equal_fold(text_.substr(pos_, names[i].size()), names[i])) {
        pos_ += names[i].size();
        return static_cast<int>(i);
      }
    }
    return std::nullopt;
  }
  // Exactly `min`..`max` digits (Go: "02" is two digits, "15" and "_2" one or two).
  std::optional<int> number(size_t min, size_t max) {
    size_t start = pos_;
    int value = 0;
    while (pos_ < text_.size() && pos_ - start < max &&
           std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
      value = value * 10 + (text_[pos_++] - '0');
    }
    if (pos_ - start < min) return std::nullopt;
    return value;
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

struct Civil {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
};

bool leap(int year) {
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

std::optional<int64_t> to_epoch(const Civil& c) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (c.month < 1 || c.month > 12 || c.day < 1) return std::nullopt;
  if (c.day > kDays[c.month - 1] + (c.month == 2 && leap(c.year) ? 1 : 0)) return std::nullopt;
  if (c.hour > 23 || c.minute > 59 || c.second > 59) return std::nullopt;
  // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
  int64_t y = c.year - (c.month <= 2 ? 1 : 0);
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (c.month + (c.month > 2 ? -3 : 9)) + 2) / 5 + c.day - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  int64_t days = era * 146097 + doe - 719468;
  return days * 86400 + c.hour * 3600 + c.minute * 60 + c.second;
}

bool clock(DateScanner& s, Civil& c) {
  auto hour = s.number(1, 2);
  if (!hour || !s.literal(":")) return false;
  auto minute = s.number(2, 2);
  if (!minute || !s.literal(":")) return false;
  auto second = s.number(2, 2);
  if (!second) return false;
  c.hour = *hour;
  c.minute = *minute;
  c.second = *second;
  return true;
}

// "Sun, 06 Nov 1994 08:49:37 GMT"
std::optional<int64_t> imf_fixdate(std::string_view text) {
  DateScanner s(text);
  Civil c;
  if (!s.name(kShortDays) || !s.literal(", ")) return std::nullopt;
  auto day = s.number(2, 2);
  if (!day || !s.literal(" ")) return std::nullopt;
  auto month = s.name(kMonths);
  if (!month || !s.literal(" ")) return std::nullopt;
  auto year = s.number(4, 4);
  if (!year || !s.literal(" ") || !clock(s, c) || !s.literal(" GMT") || !s.done()) return std::nullopt;
  c.day = *day;
  c.month = *month + 1;
  c.year = *year;
  return to_epoch(c);
}

// "Sunday, 06-Nov-94 08:49:37 GMT". Go reads the zone as any abbreviation and takes an unknown one
// as UTC; only GMT and UTC are accepted here, the only zones a server may send.
std::optional<int64_t> rfc850(std::string_view text) {
  DateScanner s(text);
  Civil c;
  if (!s.name(kLongDays) || !s.literal(", ")) return std::nullopt;
  auto day = s.number(2, 2);
  if (!day || !s.literal("-")) return std::nullopt;
  auto month = s.name(kMonths);
  if (!month || !s.literal("-")) return std::nullopt;
  auto year = s.number(2, 2);
  if (!year || !s.literal(" ") || !clock(s, c) || !s.literal(" ")) return std::nullopt;
  if (!(s.literal("GMT") || s.literal("UTC")) || !s.done()) return std::nullopt;
  c.day = *day;
  c.month = *month + 1;
  c.year = *year + (*year >= 69 ? 1900 : 2000);  // Go's rule for two-digit years
  return to_epoch(c);
}

// "Sun Nov  6 08:49:37 1994": the day is padded with a space, not a zero.
std::optional<int64_t> asctime(std::string_view text) {
  DateScanner s(text);
  Civil c;
  if (!s.name(kShortDays) || !s.literal(" ")) return std::nullopt;
  auto month = s.name(kMonths);
  if (!month || !s.literal(" ")) return std::nullopt;
  (void)s.literal(" ");  // the padding of a one-digit day: present or not, both parse
  auto day = s.number(1, 2);
  if (!day || !s.literal(" ") || !clock(s, c) || !s.literal(" ")) return std::nullopt;
  auto year = s.number(4, 4);
  if (!year || !s.done()) return std::nullopt;
  c.day = *day;
  c.month = *month + 1;
  c.year = *year;
  return to_epoch(c);
}

// ---- Content-Disposition, as Go's mime.ParseMediaType reads it

bool is_tspecial(char c) {
  return std::string_view("()<>@,;:\\\"/[]?=").find(c) != std::string_view::npos;
}
bool is_token_char(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return u > 0x20 && u < 0x7f && !is_tspecial(c);
}

class ParamScanner {
 public:
  explicit ParamScanner(std::string_view text) : text_(text) {}
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
  }
  bool done() const { return pos_ == text_.size(); }
  bool consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  std::string token() {
    size_t start = pos_;
    while (pos_ < text_.size() && is_token_char(text_[pos_])) ++pos_;
    return std::string(text_.substr(start, pos_ - start));
  }
  // A token or a quoted-string (backslash quotes the next character); nullopt when neither.
  std::optional<std::string> value() {
    if (!consume('"')) {
      std::string t = token();
      if (t.empty()) return std::nullopt;
      return t;
    }
    std::string out;
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == '"') return out;
      if (c == '\\' && pos_ < text_.size()) c = text_[pos_++];
      out += c;
    }
    return std::nullopt;  // no closing quote
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 2231's extended value: charset'language'percent-encoded. Go decodes UTF-8 and US-ASCII only.
std::optional<std::string> decode_ext_value(std::string_view value) {
  size_t first = value.find('\'');
  if (first == std::string_view::npos) return std::nullopt;
  size_t second = value.find('\'', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  std::string_view charset = value.substr(0, first);
  if (!equal_fold(charset, "utf-8") && !equal_fold(charset, "us-ascii")) return std::nullopt;
  std::string out;
  for (size_t i = second + 1; i < value.size(); ++i) {
    if (value[i] != '%') {
      out += value[i];
      continue;
    }
    if (i + 2 >= value.size()) return std::nullopt;
    int hi = hex_value(value[i + 1]), lo = hex_value(value[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

}  // namespace

std::string ascii_lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::optional<int64_t> parse_http_date(std::string_view text) {
  if (auto t = imf_fixdate(text)) return t;
  if (auto t = rfc850(text)) return t;
  return asctime(text);
}

std::optional<std::string> content_disposition_filename(std::string_view value) {
  ParamScanner s(value);
  s.skip_space();
  if (s.token().empty()) return std::nullopt;  // the disposition type
  std::map<std::string, std::string> params;
  while (true) {
    s.skip_space();
    if (s.done()) break;
    if (!s.consume(';')) return std::nullopt;
    s.skip_space();
    if (s.done()) break;  // Go allows a trailing ';'
    std::string key = s.token();
    if (key.empty()) return std::nullopt;
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    s.skip_space();
    if (!s.consume('=')) return std::nullopt;
    s.skip_space();
    std::optional<std::string> v = s.value();
    if (!v) return std::nullopt;
    if (!params.emplace(key, *v).second) return std::nullopt;  // Go refuses a duplicate parameter
  }
  std::optional<std::string> name;
  if (auto ext = params.find("filename*"); ext != params.end()) name = decode_ext_value(ext->second);
  if (!name) {
    auto plain = params.find("filename");
    if (plain == params.end()) return std::nullopt;
    name = plain->second;
  }
  if (name->empty() || name->back() == '/') return std::nullopt;
  // filepath.Base: the last element; a name of slashes only would have ended in '/'.
  return name->substr(name->rfind('/') + 1);
}

std::string_view http_status_text(int status) {
  static const std::map<int, std::string_view> kText = {
      {100, "Continue"},
      {101, "Switching Protocols"},
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {203, "Non-Authoritative Information"},
      {204, "No Content"},
      {205, "Reset Content"},
      {206, "Partial Content"},
      {300, "Multiple Choices"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {303, "See Other"},
      {304, "Not Modified"},
      {305, "Use Proxy"},
      {307, "Temporary Redirect"},
      {308, "Permanent Redirect"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {402, "Payment Required"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {406, "Not Acceptable"},
      {407, "Proxy Authentication Required"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {410, "Gone"},
      {411, "Length Required"},
      {412, "Precondition Failed"},
      {413, "Request Entity Too Large"},
      {414, "Request URI Too Long"},
      {415, "Unsupported Media Type"},
      {416, "Requested Range Not Satisfiable"},
      {417, "Expectation Failed"},
      {418, "I'm a teapot"},
      {421, "Misdirected Request"},
      {422, "Unprocessable Entity"},
      {423, "Locked"},
      {424, "Failed Dependency"},
      {425, "Too Early"},
      {426, "Upgrade Required"},
      {428, "Precondition Required"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {451, "Unavailable For Legal Reasons"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
      {505, "HTTP Version Not Supported"},
      {506, "Variant Also Negotiates"},
      {507, "Insufficient Storage"},
      {508, "Loop Detected"},
      {510, "Not Extended"},
      {511, "Network Authentication Required"},
  };
  auto it = kText.find(status);
  return it == kText.end() ? std::string_view() : it->second;
}

}  // namespace kiln::registry
