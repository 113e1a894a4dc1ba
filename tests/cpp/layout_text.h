// The container tables as text, one item per line (written by
// tests/test_forward_cross.py write_layout from the manifest: the same tables
// edgemoe/api.py hands the engine). Read by forward_pass.cpp and the libFuzzer
// target fuzz_engine.cpp, which feeds it hostile text: every malformed or
// oversized item throws std::runtime_error instead of allocating.
//
//   config <key> <kind> <value>    (kind: int, float, bool, text or ints; the fields of csrc/model/config.cpp)
//   path <container file>
//   resident <offset> <size> <crc32>
//   tensor <name> <type> <rows> <cols> <offset> <nbytes>
//   expert <layer> <expert> <offset> <size> <crc32> <type> <gate> <up> <down> <stored>
//   tokens <id> <id> ...
#pragma once
#include <cstdint>
#include <istream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/engine.h"

namespace edgemoe_test {

struct LayoutText {
  edgemoe::ModelConfig config;
  edgemoe::ContainerLayout layout;
  std::vector<int32_t> tokens;
};

inline LayoutText parse_layout_text(std::istream& in) {
  constexpr size_t kMaxLayers = 1024, kMaxExperts = 4096, kMaxItems = 1 << 16;
  LayoutText r;
  edgemoe::Values conf;
  size_t items = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (++items > kMaxItems) throw std::runtime_error("too many lines");
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (kind == "config") {
      using Kind = edgemoe::Value::Kind;
      std::string key, type;
      ls >> key >> type;
      edgemoe::Value v;
      if (type == "int") {
        v.kind = Kind::Int;
        ls >> v.i;
      } else if (type == "float") {
        v.kind = Kind::Float;
        ls >> v.f;
      } else if (type == "bool") {
        v.kind = Kind::Bool;
        ls >> v.b;
      } else if (type == "text") {
        v.kind = Kind::Text;
        ls >> v.text;
      } else if (type == "ints") {
        v.kind = Kind::IntList;
        for (int64_t x; v.list.size() < kMaxItems && ls >> x;) v.list.push_back(x);
        ls.clear(ls.rdstate() & ~(std::ios::failbit | std::ios::eofbit));
      } else {
        throw std::runtime_error("unknown config value kind '" + type + "'");
      }
      if (ls.fail()) throw std::runtime_error("unreadable config value for " + key);
      conf[key] = v;
    } else if (kind == "path") {
      ls >> r.layout.path;
    } else if (kind == "resident") {
      ls >> r.layout.resident_offset >> r.layout.resident_size >> r.layout.resident_crc;
    } else if (kind == "tensor") {
      edgemoe::TensorEntry t;
      ls >> t.name >> t.type >> t.rows >> t.cols >> t.offset >> t.nbytes;
      r.layout.tensors.push_back(t);
    } else if (kind == "expert") {
      size_t l = 0, e = 0;
      edgemoe::ExpertEntry x;
      ls >> l >> e >> x.offset >> x.size >> x.crc32 >> x.type >> x.gate >> x.up >> x.down >> x.stored;
      if (l >= kMaxLayers || e >= kMaxExperts) throw std::runtime_error("expert index out of range");
      auto& experts = r.layout.experts;
      if (experts.size() <= l) experts.resize(l + 1);
      if (experts[l].size() != e) throw std::runtime_error("experts out of order");
      experts[l].push_back(x);
    } else if (kind == "tokens") {
      int32_t t;
      while (ls >> t && r.tokens.size() < kMaxItems) r.tokens.push_back(t);
    }
    if (ls.bad()) throw std::runtime_error("unreadable line");
  }
  r.config = edgemoe::config_from_values(conf);  // throws FormatError on a bad field
  return r;
}

}  // namespace edgemoe_test
