#include "builder/go_regexp.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <utility>

#include "parser/unicode.h"

namespace kiln::builder {

namespace {

using parser::unicode::append_utf8;
using parser::unicode::decode_utf8;
using parser::unicode::DecodedRune;
using parser::unicode::kReplacementCharacter;

constexpr char32_t kMaxRune = 0x10FFFF;
constexpr std::size_t kMaxNesting = 1000;  // Go's parser refuses deeper nesting too

bool is_alnum(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

// Go's syntax.IsWordChar: ASCII only.
bool is_word_char(char32_t c) {
  return is_alnum(c) || c == '_';
}

int hex_value(char32_t c) {
  if (c >= '0' && c <= '9') return static_cast<int>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<int>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<int>(c - 'A' + 10);
  return -1;
}

struct RangeList {
  std::vector<std::pair<char32_t, char32_t>> ranges;
  void add(char32_t low, char32_t high) { ranges.emplace_back(low, high); }
  void add_negated(std::initializer_list<std::pair<char32_t, char32_t>> sorted) {
    char32_t next = 0;
    for (auto [low, high] : sorted) {
      if (low > next) add(next, low - 1);
      next = high + 1;
    }
    if (next <= kMaxRune) add(next, kMaxRune);
  }
};

using Group = std::initializer_list<std::pair<char32_t, char32_t>>;

// Go's perl_groups.go: the Perl classes and the POSIX names, ASCII only.
bool add_group(std::string_view name, bool negated, RangeList& out) {
  static const Group kDigit = {{'0', '9'}};
  static const Group kSpace = {{'\t', '\n'}, {'\f', '\r'}, {' ', ' '}};
  static const Group kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
  static const Group kAlnum = {{'0', '9'}, {'A', 'Z'}, {'a', 'z'}};
  static const Group kAlpha = {{'A', 'Z'}, {'a', 'z'}};
  static const Group kAscii = {{0, 0x7F}};
  static const Group kBlank = {{'\t', '\t'}, {' ', ' '}};
  static const Group kCntrl = {{0, 0x1F}, {0x7F, 0x7F}};
  static const Group kGraph = {{'!', '~'}};
  static const Group kLower = {{'a', 'z'}};
  static const Group kPrint = {{' ', '~'}};
  static const Group kPunct = {{'!', '/'}, {':', '@'}, {'[', '`'}, {'{', '~'}};
  static const Group kPosixSpace = {{'\t', '\r'}, {' ', ' '}};
  static const Group kUpper = {{'A', 'Z'}};
  static const Group kXdigit = {{'0', '9'}, {'A', 'F'}, {'a', 'f'}};
  static const std::pair<std::string_view, const Group*> kGroups[] = {
      {"d", &kDigit},       {"s", &kSpace},          {"w", &kWord},      {"alnum", &kAlnum},
      {"alpha", &kAlpha},   {"ascii", &kAscii},      {"blank", &kBlank}, {"cntrl", &kCntrl},
      {"digit", &kDigit},   {"graph", &kGraph},      {"lower", &kLower}, {"print", &kPrint},
      {"punct", &kPunct},   {"space", &kPosixSpace}, {"upper", &kUpper}, {"word", &kWord},
      {"xdigit", &kXdigit},
  };
  for (const auto& [group_name, group] : kGroups) {
    if (group_name != name) continue;
    if (negated) {
      out.add_negated(*group);
    } else {
      for (auto [low, high] : *group) out.add(low, high);
    }
    return true;
  }
  return false;
}

// A piece of NFA under construction: its entry state and the exits still to be connected.
struct Fragment {
  std::uint32_t start = 0;
  std::vector<std::uint32_t> exits;  // state index * 2 + (0 for out, 1 for out1)
};

}  // namespace

// Go's parser for the subset described in the header, building a Thompson NFA as it goes.
class GoRegexpParser {
 public:
  GoRegexpParser(std::string_view expression, GoRegexp& re)
      : whole_(expression), rest_(expression), re_(re) {}

  // Returns the error text, or nullopt on success.
  std::optional<std::string> parse() {
    bool anchored = false;
    auto body = sequence(0, &anchored);
    if (!body) return error_;
    if (!rest_.empty()) return error("unexpected )", whole_);  // sequence() stops only at `)`
    std::uint32_t match = add_state(GoRegexp::Op::match);
    connect(*body, match);
    re_.start_ = body->start;
    re_.anchored_ = anchored;
    required_literals();
    return std::nullopt;
  }

 private:
  using Op = GoRegexp::Op;

  // A top-level atom, as far as required_literals needs to know it.
  struct TopAtom {
    enum class Kind : std::uint8_t { rune, begin, end, other } kind;
    char32_t rune = 0;
    bool repeated = false;
  };

  std::nullopt_t fail(std::string message) {
    error_ = std::move(message);
    return std::nullopt;
  }
  static std::string error(std::string_view code, std::string_view expr) {
    return fmt::format("{}: `{}`", code, expr);
  }

  std::uint32_t add_state(Op op) {
    GoRegexp::State state;
    state.op = op;
    re_.states_.push_back(state);
    return static_cast<std::uint32_t>(re_.states_.size() - 1);
  }
  Fragment single(Op op) {
    std::uint32_t s = add_state(op);
    return Fragment{s, {s * 2}};
  }
  void connect(const Fragment& from, std::uint32_t to) {
    for (std::uint32_t exit : from.exits) {
      if (exit % 2 == 0) {
        re_.states_[exit / 2].out = to;
      } else {
        re_.states_[exit / 2].out1 = to;
      }
    }
  }
  Fragment concat(std::optional<Fragment> first, Fragment second) {
    if (!first) return second;
    connect(*first, second.start);
    return Fragment{first->start, std::move(second.exits)};
  }

  std::optional<DecodedRune> next_rune(std::string_view text) {
    auto decoded = decode_utf8(text, 0);
    if (decoded.rune == kReplacementCharacter && decoded.length == 1) {
      return fail(error("invalid UTF-8", text));
    }
    return decoded;
  }

  // A concatenation up to the end or to a `)` (left in rest_). `anchored` (top level only) is set
  // when it begins with an unrepeated `^` or `\A`.
  std::optional<Fragment> sequence(std::size_t depth, bool* anchored) {
    if (depth > kMaxNesting) return fail(error("expression nests too deeply", whole_));
    std::optional<Fragment> done;  // everything before `last`
    std::optional<Fragment> last;  // the latest atom, which a repetition operator applies to
    std::string_view last_repeat;  // the operator text just read, for Go's "nested repetition" error
    bool first_atom_is_anchor = false;
    std::size_t atoms = 0;
    auto push = [&](Fragment atom, TopAtom info = TopAtom{TopAtom::Kind::other}) {
      if (last) done = concat(std::move(done), std::move(*last));
      last = std::move(atom);
      ++atoms;
      if (depth == 0) top_.push_back(info);
    };
    while (!rest_.empty()) {
      std::string_view repeat;
      const std::string_view before = rest_;
      switch (rest_[0]) {
        case ')':
          if (depth == 0) return fail(error("unexpected )", whole_));
          goto finished;
        case '|':
          return fail(error("alternation is not supported", whole_));
        case '(': {
          if (rest_.size() >= 2 && rest_[1] == '?') {
            return fail(error("flags and named groups are not supported", whole_));
          }
          rest_.remove_prefix(1);
          auto inner = sequence(depth + 1, nullptr);
          if (!inner) return std::nullopt;
          if (rest_.empty()) return fail(error("missing closing )", whole_));
          rest_.remove_prefix(1);
          push(std::move(*inner));
          break;
        }
        case '^':
          rest_.remove_prefix(1);
          push(single(Op::begin_text), TopAtom{TopAtom::Kind::begin});
          if (atoms == 1) first_atom_is_anchor = true;
          break;
        case '$':
          rest_.remove_prefix(1);
          push(single(Op::end_text), TopAtom{TopAtom::Kind::end});
          break;
        case '.':
          rest_.remove_prefix(1);
          push(single(Op::any_not_newline));
          break;
        case '[': {
          auto atom = char_class();
          if (!atom) return std::nullopt;
          push(std::move(*atom));
          break;
        }
        case '*':
        case '+':
        case '?': {
          const char op = rest_[0];
          rest_.remove_prefix(1);
          if (!rest_.empty() && rest_[0] == '?') rest_.remove_prefix(1);  // lazy: same language
          repeat = before.substr(0, before.size() - rest_.size());
          if (!last_repeat.empty()) {
            return fail(error("invalid nested repetition operator",
                              std::string_view(last_repeat.data(), last_repeat.size() + repeat.size())));
          }
          if (!last) return fail(error("missing argument to repetition operator", repeat));
          if (atoms == 1) first_atom_is_anchor = false;
          last = repeated(std::move(*last), op);
          if (depth == 0) top_.back().repeated = true;
          break;
        }
        case '{':
          if (is_counted_repetition(rest_)) {
            return fail(error("counted repetition is not supported", whole_));
          }
          rest_.remove_prefix(1);
          push(literal('{'), TopAtom{TopAtom::Kind::rune, '{'});
          break;
        case '\\': {
          if (!escape(push, atoms, first_atom_is_anchor)) return std::nullopt;
          break;
        }
        default: {
          auto decoded = next_rune(rest_);
          if (!decoded) return std::nullopt;
          rest_.remove_prefix(decoded->length);
          push(literal(decoded->rune), TopAtom{TopAtom::Kind::rune, decoded->rune});
          break;
        }
      }
      last_repeat = repeat;
    }
  finished:
    if (anchored) *anchored = first_atom_is_anchor;
    if (last) done = concat(std::move(done), std::move(*last));
    if (!done) done = single(Op::nop);
    return done;
  }

  static bool is_counted_repetition(std::string_view t) {
    // {n}, {n,} or {n,m}; anything else starting with `{` is a literal in Go.
    std::size_t i = 1;
    auto digits = [&] {
      std::size_t from = i;
      while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
      return i > from;
    };
    if (!digits()) return false;
    if (i < t.size() && t[i] == ',') {
      ++i;
      if (i < t.size() && t[i] != '}' && !digits()) return false;
    }
    return i < t.size() && t[i] == '}';
  }

  Fragment literal(char32_t rune) {
    Fragment f = single(Op::rune);
    re_.states_[f.start].rune = rune;
    return f;
  }

  Fragment repeated(Fragment body, char op) {
    std::uint32_t split = add_state(Op::split);
    re_.states_[split].out = body.start;
    switch (op) {
      case '*':
        connect(body, split);
        return Fragment{split, {split * 2 + 1}};
      case '+':
        connect(body, split);
        return Fragment{body.start, {split * 2 + 1}};
      default: {  // '?'
        body.exits.push_back(split * 2 + 1);
        return Fragment{split, std::move(body.exits)};
      }
    }
  }

  Fragment class_fragment(RangeList& list, bool negated) {
    auto& ranges = list.ranges;
    std::sort(ranges.begin(), ranges.end(), [](auto a, auto b) {
      return a.first < b.first || (a.first == b.first && a.second > b.second);
    });
    std::vector<std::pair<char32_t, char32_t>> merged;
    for (auto range : ranges) {
      if (!merged.empty() && range.first <= merged.back().second + 1) {
        merged.back().second = std::max(merged.back().second, range.second);
      } else {
        merged.push_back(range);
      }
    }
    if (negated) {
      std::vector<std::pair<char32_t, char32_t>> inverse;
      char32_t next = 0;
      for (auto [low, high] : merged) {
        if (low > next) inverse.emplace_back(next, low - 1);
        next = high + 1;
      }
      if (next <= kMaxRune) inverse.emplace_back(next, kMaxRune);
      merged = std::move(inverse);
    }
    Fragment f = single(Op::char_class);
    auto& state = re_.states_[f.start];
    state.first_range = static_cast<std::uint32_t>(re_.ranges_.size());
    for (auto [low, high] : merged) re_.ranges_.push_back({low, high});
    state.end_range = static_cast<std::uint32_t>(re_.ranges_.size());
    return f;
  }

  // `\d`, `\S` and the rest at the start of `t`, added to `out`; false when `t` holds none.
  static bool perl_class(std::string_view t, RangeList& out) {
    if (t.size() < 2 || t[0] != '\\') return false;
    switch (t[1]) {
      case 'd':
      case 's':
      case 'w':
        return add_group(std::string_view(&t[1], 1), false, out);
      case 'D':
      case 'S':
      case 'W': {
        const char lower = static_cast<char>(t[1] - 'A' + 'a');
        return add_group(std::string_view(&lower, 1), true, out);
      }
      default:
        return false;
    }
  }

  // Go's parseEscape: the rune of the escape at the start of `t` (which begins with `\`).
  std::optional<char32_t> escaped_rune(std::string_view& t) {
    const std::string_view whole = t;
    t.remove_prefix(1);
    if (t.empty()) return fail("trailing backslash at end of expression");
    auto c = next_rune(t);
    if (!c) return std::nullopt;
    t.remove_prefix(c->length);
    auto invalid = [&]() -> std::nullopt_t {
      return fail(error("invalid escape sequence", whole.substr(0, whole.size() - t.size())));
    };
    const char32_t r = c->rune;
    if (r < 0x80 && !is_alnum(r)) return r;
    switch (r) {
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7':
        // A lone digit would be a back-reference, which Go does not have.
        if (t.empty() || t[0] < '0' || t[0] > '7') return invalid();
        [[fallthrough]];
      case '0': {
        char32_t value = r - '0';
        for (int i = 1; i < 3 && !t.empty() && t[0] >= '0' && t[0] <= '7'; ++i) {
          value = value * 8 + static_cast<char32_t>(t[0] - '0');
          t.remove_prefix(1);
        }
        return value;
      }
      case 'x': {
        if (t.empty()) return invalid();
        auto first = next_rune(t);
        if (!first) return std::nullopt;
        t.remove_prefix(first->length);
        if (first->rune == '{') {
          char32_t value = 0;
          int digits = 0;
          for (;;) {
            if (t.empty()) return invalid();
            auto d = next_rune(t);
            if (!d) return std::nullopt;
            t.remove_prefix(d->length);
            if (d->rune == '}') break;
            int v = hex_value(d->rune);
            if (v < 0) return invalid();
            value = value * 16 + static_cast<char32_t>(v);
            if (value > kMaxRune) return invalid();
            ++digits;
          }
          if (digits == 0) return invalid();
          return value;
        }
        if (t.empty()) return invalid();
        auto second = next_rune(t);
        if (!second) return std::nullopt;
        t.remove_prefix(second->length);
        int x = hex_value(first->rune);
        int y = hex_value(second->rune);
        if (x < 0 || y < 0) return invalid();
        return static_cast<char32_t>(x * 16 + y);
      }
      case 'a':
        return U'\a';
      case 'f':
        return U'\f';
      case 'n':
        return U'\n';
      case 'r':
        return U'\r';
      case 't':
        return U'\t';
      case 'v':
        return U'\v';
      default:
        return invalid();
    }
  }

  template <typename Push>
  bool escape(Push& push, std::size_t& atoms, bool& first_atom_is_anchor) {
    if (rest_.size() >= 2) {
      switch (rest_[1]) {
        case 'A':
          rest_.remove_prefix(2);
          push(single(Op::begin_text), TopAtom{TopAtom::Kind::begin});
          if (atoms == 1) first_atom_is_anchor = true;
          return true;
        case 'z':
          rest_.remove_prefix(2);
          push(single(Op::end_text), TopAtom{TopAtom::Kind::end});
          return true;
        case 'b':
          rest_.remove_prefix(2);
          push(single(Op::word_boundary));
          return true;
        case 'B':
          rest_.remove_prefix(2);
          push(single(Op::not_word_boundary));
          return true;
        case 'C':
          fail(error("invalid escape sequence", rest_.substr(0, 2)));
          return false;
        case 'Q': {
          // Everything up to `\E` (or the end) is literal.
          std::string_view quoted = rest_.substr(2);
          std::size_t end = quoted.find("\\E");
          rest_ = end == std::string_view::npos ? std::string_view() : quoted.substr(end + 2);
          if (end != std::string_view::npos) quoted = quoted.substr(0, end);
          while (!quoted.empty()) {
            auto decoded = next_rune(quoted);
            if (!decoded) return false;
            quoted.remove_prefix(decoded->length);
            push(literal(decoded->rune), TopAtom{TopAtom::Kind::rune, decoded->rune});
          }
          return true;
        }
        case 'p':
        case 'P':
          fail(error("Unicode classes are not supported", rest_.substr(0, 2)));
          return false;
        default:
          break;
      }
    }
    RangeList perl;
    if (perl_class(rest_, perl)) {
      rest_.remove_prefix(2);
      push(class_fragment(perl, false));
      return true;
    }
    auto rune = escaped_rune(rest_);
    if (!rune) return false;
    push(literal(*rune), TopAtom{TopAtom::Kind::rune, *rune});
    return true;
  }

  // Go's parseClass, with the flags regexp.Compile uses: `-` may appear anywhere (Perl), a negated
  // class matches `\n` too.
  std::optional<Fragment> char_class() {
    const std::string_view whole_class = rest_;
    std::string_view t = rest_.substr(1);
    bool negated = false;
    if (!t.empty() && t[0] == '^') {
      negated = true;
      t.remove_prefix(1);
    }
    RangeList list;
    for (bool first = true; t.empty() || t[0] != ']' || first; first = false) {
      if (t.size() > 2 && t[0] == '[' && t[1] == ':') {
        std::size_t close = t.find(":]", 2);
        if (close != std::string_view::npos) {
          std::string_view name = t.substr(2, close - 2);
          bool named_negated = !name.empty() && name[0] == '^';
          if (named_negated) name.remove_prefix(1);
          // add_group also knows the one-letter Perl names, which are no POSIX class.
          if (name.size() == 1 || !add_group(name, named_negated, list)) {
            return fail(error("invalid character class range", t.substr(0, close + 2)));
          }
          t.remove_prefix(close + 2);
          continue;
        }
      }
      if (t.size() >= 2 && t[0] == '\\' && (t[1] == 'p' || t[1] == 'P')) {
        return fail(error("Unicode classes are not supported", t.substr(0, 2)));
      }
      if (perl_class(t, list)) {
        t.remove_prefix(2);
        continue;
      }
      const std::string_view range_text = t;
      auto low = class_char(t, whole_class);
      if (!low) return std::nullopt;
      char32_t high = *low;
      if (t.size() >= 2 && t[0] == '-' && t[1] != ']') {
        t.remove_prefix(1);
        auto end = class_char(t, whole_class);
        if (!end) return std::nullopt;
        high = *end;
        if (high < *low) {
          return fail(
              error("invalid character class range", range_text.substr(0, range_text.size() - t.size())));
        }
      }
      list.add(*low, high);
    }
    t.remove_prefix(1);  // the `]`
    rest_ = t;
    return class_fragment(list, negated);
  }

  std::optional<char32_t> class_char(std::string_view& t, std::string_view whole_class) {
    if (t.empty()) return fail(error("missing closing ]", whole_class));
    if (t[0] == '\\') return escaped_rune(t);
    auto decoded = next_rune(t);
    if (!decoded) return std::nullopt;
    t.remove_prefix(decoded->length);
    return decoded->rune;
  }

  // The literal runes right after a leading `^`, right before a final `$`, and in the longest run
  // anywhere at the top level, as bytes. U+FFFD
  // ends a run: as a literal it also matches a byte that is not UTF-8, which bytes cannot say.
  void required_literals() {
    auto literal = [](const TopAtom& atom) {
      return atom.kind == TopAtom::Kind::rune && !atom.repeated && atom.rune != kReplacementCharacter;
    };
    if (!top_.empty() && top_.front().kind == TopAtom::Kind::begin && !top_.front().repeated) {
      for (std::size_t i = 1; i < top_.size() && literal(top_[i]); ++i)
        append_utf8(re_.required_prefix_, top_[i].rune);
    }
    if (!top_.empty() && top_.back().kind == TopAtom::Kind::end && !top_.back().repeated) {
      std::size_t first = top_.size() - 1;
      while (first > 0 && literal(top_[first - 1])) --first;
      for (std::size_t i = first; i + 1 < top_.size(); ++i) append_utf8(re_.required_suffix_, top_[i].rune);
    }
    std::string run;
    for (std::size_t i = 0; i <= top_.size(); ++i) {
      if (i < top_.size() && literal(top_[i])) {
        append_utf8(run, top_[i].rune);
        continue;
      }
      if (run.size() > re_.required_infix_.size()) re_.required_infix_ = run;
      run.clear();
    }
  }

  std::string_view whole_;
  std::string_view rest_;
  GoRegexp& re_;
  std::string error_;
  std::vector<TopAtom> top_;
};

std::optional<GoRegexp> GoRegexp::compile(std::string_view expression, std::string* why) {
  GoRegexp re;
  GoRegexpParser parser(expression, re);
  if (auto error = parser.parse()) {
    if (why) *why = std::move(*error);
    return std::nullopt;
  }
  return re;
}

bool GoRegexp::class_contains(const State& state, char32_t rune) const {
  // Ranges are sorted and disjoint; classes are short, so a linear scan is as good as a search.
  for (std::uint32_t i = state.first_range; i < state.end_range; ++i) {
    if (rune < ranges_[i].low) return false;
    if (rune <= ranges_[i].high) return true;
  }
  return false;
}

namespace {

// A set of NFA states that keeps insertion order: the states to step from at one text position.
class StateSet {
 public:
  StateSet(std::uint32_t* dense, std::uint32_t* sparse) : dense_(dense), sparse_(sparse) {}
  bool contains(std::uint32_t s) const { return sparse_[s] < size_ && dense_[sparse_[s]] == s; }
  void insert(std::uint32_t s) {
    sparse_[s] = size_;
    dense_[size_++] = s;
  }
  void clear() { size_ = 0; }
  std::uint32_t size() const { return size_; }
  std::uint32_t operator[](std::uint32_t i) const { return dense_[i]; }

 private:
  std::uint32_t* dense_;
  std::uint32_t* sparse_;
  std::uint32_t size_ = 0;
};

constexpr char32_t kNoRune = 0xFFFFFFFF;  // before the start or after the end of the text

}  // namespace

bool GoRegexp::matches(std::string_view text) const {
  if (text.size() < required_prefix_.size() ||
      text.compare(0, required_prefix_.size(), required_prefix_) != 0) {
    return false;
  }
  if (text.size() < required_suffix_.size() ||
      text.compare(text.size() - required_suffix_.size(), required_suffix_.size(), required_suffix_) != 0) {
    return false;
  }
  if (!required_infix_.empty() && text.find(required_infix_) == std::string_view::npos) return false;
  const auto n = static_cast<std::uint32_t>(states_.size());
  // Two state sets (a dense and a sparse array each) and the closure's stack, which can hold two
  // entries per state. Small expressions, which are nearly all of them, keep these on the stack.
  constexpr std::uint32_t kInline = 128;
  std::array<std::uint32_t, 6 * kInline> inline_storage;
  std::vector<std::uint32_t> heap_storage;
  std::uint32_t* storage = inline_storage.data();
  const std::uint32_t stride = std::max(n, kInline);
  if (n > kInline) {
    heap_storage.resize(static_cast<std::size_t>(6) * stride);
    storage = heap_storage.data();
  }
  // A sparse array is read at indices not yet written (that is how it answers "not there"), so it
  // must hold defined values; the dense ones are only read below their size.
  std::fill_n(storage + stride, n, 0U);
  std::fill_n(storage + 3 * stride, n, 0U);
  StateSet current(storage, storage + stride);
  StateSet next(storage + 2 * stride, storage + 3 * stride);
  std::uint32_t* stack = storage + 4 * stride;

  bool matched = false;
  // Adds `from` and every state reachable from it without consuming input, at a position whose
  // neighbouring runes are `before` and `after`.
  auto add = [&](StateSet& set, std::uint32_t from, std::size_t pos, char32_t before, char32_t after) {
    std::uint32_t depth = 0;
    stack[depth++] = from;
    while (depth > 0) {
      std::uint32_t s = stack[--depth];
      if (set.contains(s)) continue;
      set.insert(s);
      const State& state = states_[s];
      switch (state.op) {
        case Op::split:
          stack[depth++] = state.out1;
          stack[depth++] = state.out;
          break;
        case Op::nop:
          stack[depth++] = state.out;
          break;
        case Op::begin_text:
          if (pos == 0) stack[depth++] = state.out;
          break;
        case Op::end_text:
          if (pos == text.size()) stack[depth++] = state.out;
          break;
        case Op::word_boundary:
        case Op::not_word_boundary: {
          bool boundary =
              (before != kNoRune && is_word_char(before)) != (after != kNoRune && is_word_char(after));
          if (boundary == (state.op == Op::word_boundary)) stack[depth++] = state.out;
          break;
        }
        case Op::match:
          matched = true;
          break;
        default:
          break;
      }
    }
  };

  std::size_t pos = 0;
  char32_t before = kNoRune;
  DecodedRune at = pos < text.size() ? decode_utf8(text, pos) : DecodedRune{kNoRune, 0};
  for (;;) {
    // regexp.MatchString searches: a match may begin at any position unless the expression is
    // anchored at the start.
    if (pos == 0 || !anchored_) add(current, start_, pos, before, at.rune);
    if (matched) return true;
    if (pos == text.size() || (anchored_ && current.size() == 0)) return false;
    const std::size_t after_pos = pos + at.length;
    const DecodedRune after =
        after_pos < text.size() ? decode_utf8(text, after_pos) : DecodedRune{kNoRune, 0};
    next.clear();
    for (std::uint32_t i = 0; i < current.size(); ++i) {
      const State& state = states_[current[i]];
      bool consumes = false;
      switch (state.op) {
        case Op::rune:
          consumes = at.rune == state.rune;
          break;
        case Op::char_class:
          consumes = class_contains(state, at.rune);
          break;
        case Op::any_not_newline:
          consumes = at.rune != '\n';
          break;
        default:
          break;
      }
      if (consumes) add(next, state.out, after_pos, at.rune, after.rune);
    }
    if (matched) return true;
    std::swap(current, next);
    before = at.rune;
    at = after;
    pos = after_pos;
  }
}

}  // namespace kiln::builder
