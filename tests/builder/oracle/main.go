// The reference answers for kiln's builder tests, from Go itself: filepath.Match, regexp.MatchString,
// and moby/patternmatcher (Debian's package) with the walk decisions of BuildKit's context sender.
// See README.md for how the corpora in testdata/builder were made.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/patternmatcher"
)

func enc(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || c == '%' || c == '|' || c == '#' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func pick(r *rand.Rand, alphabet []string, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(alphabet[r.Intn(len(alphabet))])
	}
	return b.String()
}

// readAll reads an ignore file as ignorefile.ReadAll does (Debian's patternmatcher 0.5.0 predates
// that package): BOM, `#` comments in the first column, trimming, `!`, Clean, no leading `/`.
func readAll(text string) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	line := 0
	for sc.Scan() {
		b := sc.Bytes()
		if line == 0 {
			b = bytes.TrimPrefix(b, []byte{0xEF, 0xBB, 0xBF})
		}
		line++
		p := string(b)
		if strings.HasPrefix(p, "#") {
			continue
		}
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		inv := p[0] == '!'
		if inv {
			p = strings.TrimSpace(p[1:])
		}
		if len(p) > 0 {
			p = filepath.Clean(p)
			if len(p) > 1 && p[0] == '/' {
				p = p[1:]
			}
		}
		if inv {
			p = "!" + p
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

func withoutTrailingGlob(p string) string {
	p = strings.TrimSuffix(p, "/**")
	p = strings.TrimSuffix(p, "/*")
	return p
}

// mayDescend is fsutil's choice (filter.go) for an excluded directory: read it when an exception has
// a wildcard, else when an exception names a path below it.
func mayDescend(pm *patternmatcher.PatternMatcher, dir string) bool {
	literal := true
	for _, p := range pm.Patterns() {
		if p.Exclusion() && strings.ContainsAny(withoutTrailingGlob(p.String()), "*[]?^\\") {
			literal = false
		}
	}
	if !literal {
		return true
	}
	if !pm.Exclusions() {
		return false
	}
	for _, p := range pm.Patterns() {
		if p.Exclusion() && strings.HasPrefix(withoutTrailingGlob(p.String())+"/", dir+"/") {
			return true
		}
	}
	return false
}

func main() {
	mode := os.Args[1]
	seed, _ := strconv.Atoi(os.Args[2])
	count, _ := strconv.Atoi(os.Args[3])
	r := rand.New(rand.NewSource(int64(seed)))
	switch mode {
	case "match":
		pat := []string{"a", "b", "/", "*", "*", "?", "[", "]", "^", "!", "-", "\\", "é", "\xff", "a", "b", "c"}
		name := []string{"a", "b", "c", "/", "é", "\xff", "-", "]", "*", "!", "^", "\\"}
		for i := 0; i < count; i++ {
			p := pick(r, pat, r.Intn(7))
			n := pick(r, name, r.Intn(6))
			if r.Intn(2) == 0 {
				// A name made from the pattern, so that matches are common.
				var b strings.Builder
				for _, c := range []byte(p) {
					switch c {
					case '*':
						b.WriteString(pick(r, name, r.Intn(3)))
					case '?':
						b.WriteString(pick(r, name, 1))
					case '[', ']', '^', '\\':
						if r.Intn(2) == 0 {
							b.WriteByte(c)
						}
					default:
						b.WriteByte(c)
					}
				}
				n = b.String()
			}
			m, err := filepath.Match(p, n)
			res := "no"
			if err != nil {
				res = "bad"
			} else if m {
				res = "yes"
			}
			fmt.Printf("%s|%s|%s\n", enc(p), enc(n), res)
		}
	case "regexp":
		// Expressions over the constructs patternmatcher's translation can produce, and texts.
		tokens := []string{"^", "$", "a", "b", "/", ".", "*", "?", "+", "*?", "[a-b]", "[^a]", "[^/]", "(", ")",
			"(.*/)?", "\\d", "\\w", "\\s", "\\b", "\\B", "\\A", "\\z", "\\Qa*\\E", "[[:alpha:]]",
			"[[:^digit:]]", "\\x61", "\\141", "\\.", "]", "[]a]", "[a-]", "[\\d_]", "é", "\\n", "[é-ê]"}
		texts := []string{"a", "b", "/", "1", "\n", "é", "\xff", "_", " ", "*", "."}
		for i := 0; i < count; i++ {
			expr := pick(r, tokens, r.Intn(6))
			text := pick(r, texts, r.Intn(6))
			re, err := regexp.Compile(expr)
			res := "bad"
			if err == nil {
				res = "no"
				if re.MatchString(text) {
					res = "yes"
				}
			}
			fmt.Printf("%s|%s|%s\n", enc(expr), enc(text), res)
		}
	case "ignore":
		// A case: ignore text lines; paths; per path: x (excluded) or k (kept), d when a dir may be descended.
		lines := []string{"a", "b", "a/b", "*", "**", "a*", "*/b", "**/b", "a/**", "b/**/c", "!a", "!a/b", "!b", "!**/c",
			"!*/c", "c", "?", "[ab]", "a/b/**", "!a/b/**", "**/", "/", ".", "..", "!.", "!../..", "a /.", "\t!  b", "\ufeffa",
			"x*[", "x*\\", "a[/]b", "**/*", "!**/a", "a?/c", "[a-c]*", "\\Qa\\E*", "a\\x62", "a\\0142", "\\bb", "*\\z",
			"a\\sb", "[[:^alpha:]]", "[\\d]", "a$", "a.b", "(a)", "a+", "{a}", "a|b", "\\.x", "!a/*/c", "[^a]", "a/c", "**/a/**", "*.x", "!*.x", "a.x", "/a", "./b", "a/", "!a/b/c",
			"a\\*", "**c", "c**", "x^*", "^a*", "a/../b", "[!a]", "\\a", "a/*", "!a/*", "!a/**", "b/*/c", "# a", " a ",
			"!", "a[", "\\", "[z-a]", "\\d", "a\\.x", "[[:alpha:]]", "[*]", "[a?]", "a\\b", "\\Qa*", "!**", "a**b"}
		trees := []string{"a", "b", "c", "a.x", "a/b", "a/c", "a/b/c", "a/b/d", "b/c", "b/a/c", "c/a/b", "ab", "ba", "a*", "b/c.x", "a/a/a", "1", "a1", "a^b", "é", "a/b/c/d", "b/b", "a b", "!a", "$", "x$", "xa", "a.b", "(a)", "a+", "{a}", "a|b", ".x", "a\tb"}
		for i := 0; i < count; i++ {
			var text []string
			for j := r.Intn(4) + 1; j > 0; j-- {
				text = append(text, lines[r.Intn(len(lines))])
			}
			ignore := strings.Join(text, "\n")
			pats, err := readAll(ignore)
			var pm *patternmatcher.PatternMatcher
			if err == nil {
				pm, err = patternmatcher.New(pats)
			}
			fmt.Printf("case|%s\n", enc(ignore))
			if err != nil {
				fmt.Printf("error|%s\n", enc(err.Error()))
				continue
			}
			// Build the set of paths (with ancestors) and walk it in sorted order, dirs first-visited.
			set := map[string]bool{}
			for _, t := range trees {
				if r.Intn(2) == 0 {
					continue
				}
				parts := strings.Split(t, "/")
				for k := 1; k <= len(parts); k++ {
					set[strings.Join(parts[:k], "/")] = true
				}
			}
			isDir := func(p string) bool {
				for q := range set {
					if strings.HasPrefix(q, p+"/") {
						return true
					}
				}
				return false
			}
			var paths []string
			for p := range set {
				paths = append(paths, p)
			}
			sort.Strings(paths)
			infos := map[string]patternmatcher.MatchInfo{}
			for _, p := range paths {
				var parent patternmatcher.MatchInfo
				if d := filepath.Dir(p); d != "." {
					parent = infos[d]
				}
				m, info, err := pm.MatchesUsingParentResults(p, parent)
				if err != nil {
					// A regular expression that does not compile fails the first path that needs it.
					fmt.Printf("matcherror|%s\n", enc(p))
					break
				}
				dir := isDir(p)
				if dir {
					infos[p] = info
				}
				v := "k"
				if m {
					v = "x"
					if dir && mayDescend(pm, p) {
						v = "xd"
					} else if dir {
						v = "xs"
					}
				}
				fmt.Printf("path|%s|%s\n", enc(p), v)
			}
		}
	}
}
