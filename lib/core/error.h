// Error values that carry their context: what was attempted, on which path,
// and the errno. Pure code and effectful code both return these, so a caller
// can log "failed to X, ignoring: why" without re-deriving the context.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace fh {

struct Error {
    std::string what;   // the action that failed, e.g. "open_tree"
    std::string path;   // the path acted on, empty when none
    int err = 0;        // errno, 0 when not a system error
    std::string detail; // extra free text, e.g. a parse message

    // Returns "what path: strerror(err) (detail)", omitting empty parts.
    std::string message() const {
        std::string m = what;
        if (!path.empty()) m += " " + path;
        if (err != 0) m += std::string(": ") + std::strerror(err);
        if (!detail.empty()) m += (err != 0 ? " (" + detail + ")" : ": " + detail);
        return m;
    }
};

// Returns an Error from the current errno.
inline Error errno_error(std::string what, std::string path = {}) {
    return Error{std::move(what), std::move(path), errno, {}};
}

// A value or an Error. Small on purpose: C++20 has no std::expected.
template <typename T>
class Result {
public:
    // Implicit on purpose: a function returns its value or its Error as is.
    // cppcheck-suppress noExplicitConstructor ; implicit by design (above)
    Result(T value) : v_(std::move(value)) {}
    // cppcheck-suppress noExplicitConstructor ; implicit by design (above)
    Result(Error error) : v_(std::move(error)) {}
    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() { return std::get<0>(v_); }
    const T& value() const { return std::get<0>(v_); }
    T& operator*() { return value(); }
    const T& operator*() const { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    const Error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

// Success or an Error, for actions that return nothing.
class Status {
public:
    Status() = default;
    // cppcheck-suppress noExplicitConstructor ; implicit, as Result's: return an Error as is
    Status(Error error) : error_(std::move(error)), failed_(true) {}
    bool ok() const { return !failed_; }
    explicit operator bool() const { return ok(); }
    const Error& error() const { return error_; }

private:
    Error error_;
    bool failed_ = false;
};

} // namespace fh
