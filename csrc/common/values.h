// Named values read into a struct through its one field list.
//
// The model config and the engine options each name their fields once, in a
// visit function that calls integer(), number(), flag(), text(), choice() or
// integers() per field with its bounds or allowed names. ValuesReader walks that
// list to fill the struct from values (from a container, a Python dict or a
// test file), checking kind and bounds; ValuesWriter walks it to describe the
// struct; ChoicesCollector to list the allowed names. No field is named twice.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace edgemoe {

struct Value {
  enum class Kind { Int, Float, Bool, Text, IntList };
  Kind kind = Kind::Int;
  int64_t i = 0;
  double f = 0.0;
  bool b = false;
  std::string text;
  std::vector<int64_t> list;
};
using Values = std::map<std::string, Value>;

enum Presence { Required, Optional };

std::string range_text(double lo, double hi);
std::string join_names(const std::vector<std::string>& names);

// Fills fields from `values`; Error (FormatError, std::invalid_argument) says
// what was wrong, prefixed with `what` ("invalid model config").
template <class Error>
class ValuesReader {
 public:
  ValuesReader(const Values& values, std::string what) : values_(values), what_(std::move(what)) {}
  size_t used() const { return used_; }

  template <class T>
  void integer(const char* name, T& out, int64_t lo, int64_t hi, Presence p = Required) {
    if (const Value* v = find(name, Value::Kind::Int, "an integer", p)) {
      if (v->i < lo || v->i > hi) throw bad(name, "= " + std::to_string(v->i) + " is outside " + range_text(lo, hi));
      out = (T)v->i;
    }
  }
  void number(const char* name, float& out, double lo, double hi, Presence p = Required) {
    const Value* v = lookup(name, p);
    if (!v) return;
    // an integral value written as an integer (10000 for 10000.0) is the same number
    if (v->kind != Value::Kind::Float && v->kind != Value::Kind::Int) throw bad(name, "must be a number");
    const double x = v->kind == Value::Kind::Float ? v->f : (double)v->i;
    if (!(x >= lo && x <= hi))  // also false for NaN
      throw bad(name, "= " + std::to_string(x) + " is outside " + range_text(lo, hi));
    out = (float)x;
  }
  void flag(const char* name, bool& out, Presence p = Required) {
    if (const Value* v = find(name, Value::Kind::Bool, "true or false", p)) out = v->b;
  }
  template <size_t N>
  void text(const char* name, std::string& out, const char* const (&allowed)[N], Presence p = Required) {
    if (const Value* v = find(name, Value::Kind::Text, "a string", p)) out = match(name, v->text, allowed);
  }
  template <class T, size_t N>
  void choice(const char* name, T& out, const std::pair<const char*, T> (&allowed)[N], Presence p = Required) {
    if (const Value* v = find(name, Value::Kind::Text, "a string", p)) out = match(name, v->text, allowed).second;
  }
  void integers(const char* name, std::vector<int64_t>& out, int64_t lo, int64_t hi, Presence p = Required,
                size_t max_entries = 1024) {
    if (const Value* v = find(name, Value::Kind::IntList, "a list of integers", p)) {
      if (v->list.size() > max_entries) throw bad(name, "has more than " + std::to_string(max_entries) + " entries");
      for (int64_t x : v->list)
        if (x < lo || x > hi) throw bad(name, "holds " + std::to_string(x) + ", outside " + range_text(lo, hi));
      out = v->list;
    }
  }

  Error bad(const std::string& name, const std::string& what) const { return Error(what_ + ": " + name + " " + what); }
  Error unknown(const std::string& name, const std::string& value, const std::vector<std::string>& names) const {
    return Error(what_ + ": unknown " + name + " '" + value + "' (available: " + join_names(names) + ")");
  }

 private:
  // The value of `name`, counted as used; null if absent and optional.
  const Value* lookup(const char* name, Presence p) {
    auto it = values_.find(name);
    if (it == values_.end()) {
      if (p == Required) throw Error(what_ + ": lacks " + name);
      return nullptr;
    }
    ++used_;
    return &it->second;
  }
  const Value* find(const char* name, Value::Kind kind, const char* kind_text, Presence p) {
    const Value* v = lookup(name, p);
    if (v && v->kind != kind) throw bad(name, std::string("must be ") + kind_text);
    return v;
  }
  // The entry of `allowed` named `text` (a name, or a (name, value) pair).
  template <class Entry, size_t N>
  const Entry& match(const char* name, const std::string& text, const Entry (&allowed)[N]) const {
    std::vector<std::string> names;
    for (const Entry& a : allowed) {
      if (text == name_of(a)) return a;
      names.push_back(name_of(a));
    }
    throw unknown(name, text, names);
  }
  static const char* name_of(const char* a) { return a; }
  template <class T>
  static const char* name_of(const std::pair<const char*, T>& a) { return a.first; }

  const Values& values_;
  std::string what_;
  size_t used_ = 0;
};

// Describes every field as a value.
struct ValuesWriter {
  Values values;

  template <class T>
  void integer(const char* name, const T& x, int64_t, int64_t, Presence = Required) {
    put(name, Value::Kind::Int).i = (int64_t)x;
  }
  void number(const char* name, const float& x, double, double, Presence = Required) { put(name, Value::Kind::Float).f = x; }
  void flag(const char* name, const bool& x, Presence = Required) { put(name, Value::Kind::Bool).b = x; }
  template <size_t N>
  void text(const char* name, const std::string& x, const char* const (&)[N], Presence = Required) {
    put(name, Value::Kind::Text).text = x;
  }
  template <class T, size_t N>
  void choice(const char* name, const T& x, const std::pair<const char*, T> (&allowed)[N], Presence = Required) {
    for (const auto& a : allowed)
      if (a.second == x) put(name, Value::Kind::Text).text = a.first;
  }
  void integers(const char* name, const std::vector<int64_t>& x, int64_t, int64_t, Presence = Required, size_t = 0) {
    put(name, Value::Kind::IntList).list = x;
  }

 private:
  Value& put(const char* name, Value::Kind kind) {
    Value& v = values[name];
    v.kind = kind;
    return v;
  }
};

// The allowed names of every text and choice field.
struct ChoicesCollector {
  std::map<std::string, std::vector<std::string>> choices;

  template <class T>
  void integer(const char*, const T&, int64_t, int64_t, Presence = Required) {}
  void number(const char*, const float&, double, double, Presence = Required) {}
  void flag(const char*, const bool&, Presence = Required) {}
  void integers(const char*, const std::vector<int64_t>&, int64_t, int64_t, Presence = Required, size_t = 0) {}
  template <size_t N>
  void text(const char* name, const std::string&, const char* const (&allowed)[N], Presence = Required) {
    for (const char* a : allowed) choices[name].push_back(a);
  }
  template <class T, size_t N>
  void choice(const char* name, const T&, const std::pair<const char*, T> (&allowed)[N], Presence = Required) {
    for (const auto& a : allowed) choices[name].push_back(a.first);
  }
};

// Throws Error naming the first of `values` that `known` (a ValuesWriter's
// output for the same struct) does not have.
template <class Error>
void refuse_unknown(const Values& values, const Values& known, const std::string& what, const std::string& hint) {
  for (const auto& kv : values)
    if (!known.count(kv.first)) throw Error(what + ": unknown field '" + kv.first + "'" + hint);
}

}  // namespace edgemoe
