// The HTTP header values kiln reads, parsed as Go's net/http and mime packages parse them: BuildKit
// (and the registries' Go clients) decide with those, and kiln must decide the same way.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::registry {

// ASCII letters in lowercase, the rest as it is: header names, auth schemes and error codes are
// ASCII, and the locale (process-wide state) must not decide.
std::string ascii_lowercase(std::string_view text);

// An HTTP-date (RFC 9110 5.6.7) as seconds since the epoch, in the three forms Go's http.ParseTime
// accepts: IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), RFC 850 ("Sunday, 06-Nov-94 08:49:37
// GMT") and asctime ("Sun Nov  6 08:49:37 1994"). nullopt for anything else, where BuildKit falls
// back to the epoch for a Last-Modified.
std::optional<int64_t> parse_http_date(std::string_view text);

// The file name a Content-Disposition value gives (`attachment; filename="a.tgz"`, or RFC 2231's
// `filename*=UTF-8''a%20b.tgz`, which wins), reduced to its last path element as BuildKit's HTTP
// source reduces it. nullopt when the value does not parse as a media type with parameters (Go's
// mime.ParseMediaType), has no filename, or the name ends in `/`.
std::optional<std::string> content_disposition_filename(std::string_view value);

// The standard reason phrase of a status code ("Not Found"), as Go's http.StatusText gives it; ""
// for a code it does not know. The server's own phrase is not shown: HTTP/2 has none, and it is
// whatever text the server chose to send.
std::string_view http_status_text(int status);

}  // namespace kiln::registry
