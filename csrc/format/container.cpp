#include "container.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <set>

#include "../common/bounds.h"
#include "../common/errors.h"
#include "../store/direct_file.h"

namespace edgemoe {
namespace {

constexpr char kMagic[8] = {'E', 'D', 'G', 'E', 'M', 'O', 'E', '\0'};
// The manifest holds the tokenizer and the index a few entries per tensor and expert, not
// weights: a size beyond these is a hostile header, refused before it sizes a read.
constexpr uint64_t kMaxManifestBytes = 256ull << 20;
constexpr uint64_t kMaxIndexBytes = 256ull << 20;
constexpr uint32_t kMaxName = 1024;      // a tensor or config field name
constexpr uint32_t kMaxListItems = 1 << 20;

// Little-endian fields of a byte range, each read checked against its end.
class Cursor {
 public:
  Cursor(const std::string& bytes, std::string where) : p_(bytes.data()), end_(p_ + bytes.size()), where_(std::move(where)) {}

  template <class T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_, sizeof(T));  // every supported target is little-endian
    p_ += sizeof(T);
    return v;
  }
  std::string text(uint64_t n) {
    need(n);
    std::string s(p_, (size_t)n);
    p_ += n;
    return s;
  }
  // A count of items of at least `min_item_bytes` each: no more than the rest could hold.
  uint32_t count(uint64_t min_item_bytes, const char* what) {
    const uint32_t n = get<uint32_t>();
    if ((uint64_t)n * min_item_bytes > remaining()) fail(std::string("claims more ") + what + " than it holds");
    return n;
  }
  uint64_t remaining() const { return (uint64_t)(end_ - p_); }
  [[noreturn]] void fail(const std::string& msg) const { throw FormatError(where_ + ": " + msg); }

 private:
  void need(uint64_t n) const {
    if (n > remaining()) fail("ends early (truncated or corrupt)");
  }
  const char* p_;
  const char* end_;
  std::string where_;
};

std::string read_bytes(DirectFile& file, uint64_t offset, uint64_t size) {
  std::string out((size_t)size, '\0');
  if (size) file.read_buffered(offset, out.data(), size);
  return out;
}

// A missing file or a folder gets a message about what to do instead.
void check_is_a_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) throw FormatError(path + ": no such model file");
    throw StorageError("cannot open '" + path + "': " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode))
    throw FormatError(path + " is a directory; convert it first with `edgemoe convert " + path + " -o model.emoe`");
}

template <class T>
T field(const std::string& raw, size_t offset) {
  T v;
  std::memcpy(&v, raw.data() + offset, sizeof(T));  // every supported target is little-endian
  return v;
}

void read_header(Container& c, DirectFile& file) {
  const std::string& path = c.path;
  const std::string raw = read_bytes(file, 0, std::min<uint64_t>(header::kBytes, c.file_size));
  if (raw.size() < sizeof kMagic || std::memcmp(raw.data() + header::kMagic, kMagic, sizeof kMagic) != 0)
    throw FormatError(path + ": not an EdgeMoE container (bad magic); convert the model with `edgemoe convert`");
  if (raw.size() < header::kFlags) throw FormatError(path + ": truncated container header");
  c.version = field<uint32_t>(raw, header::kVersion);
  if (c.version == 1)
    throw FormatError(path + ": container format version 1 was written by an older edgemoe; re-convert the model "
                             "with `edgemoe convert` (this edgemoe reads version " + std::to_string(kFormatVersion) + ")");
  if (c.version != kFormatVersion)
    throw FormatError(path + ": container format version " + std::to_string(c.version) +
                      " is not supported by this edgemoe (which reads version " + std::to_string(kFormatVersion) +
                      "); re-convert the model or upgrade edgemoe");
  if (raw.size() < header::kBytes) throw FormatError(path + ": truncated container header");
  if (crc32(raw.data(), header::kHeaderCrc) != field<uint32_t>(raw, header::kHeaderCrc))
    throw FormatError(path + ": container header checksum mismatch (corrupt or incompletely written file)");
  c.index = {field<uint64_t>(raw, header::kIndexOffset), field<uint64_t>(raw, header::kIndexSize),
             field<uint32_t>(raw, header::kIndexCrc)};
  c.manifest = {field<uint64_t>(raw, header::kManifestOffset), field<uint64_t>(raw, header::kManifestSize),
                field<uint32_t>(raw, header::kManifestCrc)};
  c.resident = {field<uint64_t>(raw, header::kResidentOffset), field<uint64_t>(raw, header::kResidentSize),
                field<uint32_t>(raw, header::kResidentCrc)};
  c.experts_section = {field<uint64_t>(raw, header::kExpertsOffset), field<uint64_t>(raw, header::kExpertsSize), 0};

  const std::pair<const char*, const Section*> sections[] = {{"index", &c.index},
                                                             {"manifest", &c.manifest},
                                                             {"resident section", &c.resident},
                                                             {"expert section", &c.experts_section}};
  for (const auto& s : sections)
    if (s.second->offset < kPage || !range_within(s.second->offset, s.second->size, c.file_size))
      throw FormatError(path + ": " + s.first + " [" + std::to_string(s.second->offset) + ", +" +
                        std::to_string(s.second->size) + ") lies outside the file of " + std::to_string(c.file_size) +
                        " bytes (truncated?)");
  // The writer pads each section to whole pages (expert reads are whole pages): a file that
  // ends inside that padding has lost its end.
  uint64_t described = 0;
  for (const auto& s : sections)
    described = std::max(described, (s.second->offset + s.second->size + kPage - 1) / kPage * kPage);
  if (c.file_size < described)
    throw FormatError(path + ": file is " + std::to_string(c.file_size) + " bytes but its header describes " +
                      std::to_string(described) + " (truncated?)");
  if (c.resident.offset % kPage || c.experts_section.offset % kPage)
    throw FormatError(path + ": sections are not page aligned");
  if (c.manifest.size > kMaxManifestBytes)
    throw FormatError(path + ": manifest of " + std::to_string(c.manifest.size) + " bytes is implausibly large");
  if (c.index.size > kMaxIndexBytes)
    throw FormatError(path + ": index of " + std::to_string(c.index.size) + " bytes is implausibly large");
}

std::string read_checked(DirectFile& file, const Section& s, const std::string& what) {
  std::string bytes = read_bytes(file, s.offset, s.size);
  if (crc32(bytes.data(), bytes.size()) != s.crc32)
    throw FormatError(file.path() + ": " + what + " checksum mismatch (corrupt file)");
  return bytes;
}

std::string name_of(Cursor& in) { return in.text(in.get<uint16_t>()); }

QType type_of(Cursor& in, const std::string& what) {
  const uint8_t code = in.get<uint8_t>();
  QType t;
  if (!qtype_from_int(code, &t)) in.fail(what + " has an unknown weight type " + std::to_string(code));
  return t;
}

Values read_config(Cursor& in) {
  enum : uint8_t { kInt, kFloat, kBool, kText, kInts };
  Values values;
  const uint32_t n = in.count(4, "config fields");
  for (uint32_t i = 0; i < n; ++i) {
    const std::string name = name_of(in);
    if (name.size() > kMaxName || values.count(name)) in.fail("config field '" + name.substr(0, 64) + "' is repeated or too long");
    Value v;
    switch (in.get<uint8_t>()) {
      case kInt: v.kind = Value::Kind::Int; v.i = in.get<int64_t>(); break;
      case kFloat: v.kind = Value::Kind::Float; v.f = in.get<double>(); break;
      case kBool: {
        const uint8_t b = in.get<uint8_t>();
        if (b > 1) in.fail("config field " + name + " is neither true nor false");
        v.kind = Value::Kind::Bool;
        v.b = b == 1;
        break;
      }
      case kText: v.kind = Value::Kind::Text; v.text = in.text(in.get<uint32_t>()); break;
      case kInts: {
        v.kind = Value::Kind::IntList;
        const uint32_t items = in.count(8, "list items");
        if (items > kMaxListItems) in.fail("config field " + name + " holds too many items");
        for (uint32_t k = 0; k < items; ++k) v.list.push_back(in.get<int64_t>());
        break;
      }
      default: in.fail("config field " + name + " has an unknown kind");
    }
    values[name] = std::move(v);
  }
  return values;
}

void read_tensors(Container& c, Cursor& in) {
  const uint32_t n = in.count(36, "tensors");
  std::set<std::string> names;
  for (uint32_t i = 0; i < n; ++i) {
    TensorEntry t;
    t.name = name_of(in);
    const std::string what = "resident tensor " + t.name.substr(0, 128);
    if (t.name.size() > kMaxName || !names.insert(t.name).second) in.fail(what + " is repeated or its name too long");
    t.type = type_of(in, what);
    t.ndim = in.get<uint8_t>();
    const uint64_t rows = in.get<uint64_t>(), cols = in.get<uint64_t>();
    t.offset = in.get<uint64_t>();
    t.nbytes = in.get<uint64_t>();
    // A shape this large describes no tensor of any section the file can hold; refusing it
    // here keeps every product below inside 64 bits.
    if ((t.ndim != 1 && t.ndim != 2) || rows < 1 || cols < 1 || rows > (1u << 31) || cols > (1u << 31) ||
        (t.ndim == 1 && rows != 1))
      in.fail(what + " has a bad shape");
    t.rows = (int64_t)rows;
    t.cols = (int64_t)cols;
    if (!qtype_supports(t.type, t.cols))
      in.fail(what + ": type " + qtype_name(t.type) + " cannot hold rows of " + std::to_string(cols));
    const uint64_t row_bytes = qtype_row_bytes(t.type, t.cols);
    if (rows > UINT64_MAX / row_bytes || t.nbytes != rows * row_bytes)
      in.fail(what + ": its size does not match its shape and type");
    if (!range_within(t.offset, t.nbytes, c.resident.size) || t.offset % kTensorAlign)
      in.fail(what + " has an inconsistent size or offset: it lies outside the resident section or is misaligned");
    c.tensors.push_back(std::move(t));
  }
  // Everything the engine binds must lie before the first tensor kept for later.
  c.resident_loaded = c.resident.size;
  for (const TensorEntry& t : c.tensors)
    if (t.name.rfind(kKeptForLaterPrefix, 0) == 0) c.resident_loaded = std::min(c.resident_loaded, t.offset);
  for (const TensorEntry& t : c.tensors)
    if (t.name.rfind(kKeptForLaterPrefix, 0) != 0 && t.offset + t.nbytes > c.resident_loaded)
      in.fail("resident tensor " + t.name.substr(0, 128) + " lies after a tensor kept for later (" +
              kKeptForLaterPrefix + "*), in the part of the section an engine does not load");
  // The language model's tensors before the vision tower's, which an engine without images leaves out.
  c.resident_text = c.resident_loaded;
  for (const TensorEntry& t : c.tensors)
    if (t.name.rfind(kVisionPrefix, 0) == 0) c.resident_text = std::min(c.resident_text, t.offset);
  for (const TensorEntry& t : c.tensors)
    if (t.name.rfind(kVisionPrefix, 0) != 0 && t.name.rfind(kKeptForLaterPrefix, 0) != 0 &&
        t.offset + t.nbytes > c.resident_text)
      in.fail("resident tensor " + t.name.substr(0, 128) + " lies after the vision tower's (" + kVisionPrefix +
              "*), which an engine without images does not load");
}

// One [layer][expert] table of blobs (`kind`: "expert" or "low-bit copy of expert", for messages).
std::vector<std::vector<ExpertEntry>> read_expert_table(const Container& c, Cursor& in, const std::string& kind) {
  const ModelConfig& cfg = c.config;
  const uint32_t layers = in.get<uint32_t>(), per_layer = in.get<uint32_t>();
  if ((int64_t)layers != cfg.n_layers || (int64_t)per_layer != cfg.n_experts)
    in.fail("expert table is " + std::to_string(layers) + " x " + std::to_string(per_layer) + ", the config says " +
            std::to_string(cfg.n_layers) + " x " + std::to_string(cfg.n_experts));
  // Dense layers (the config's dense_layers) have no entries: their rows stay empty.
  constexpr uint64_t kEntryBytes = 8 * 3 + 4 + 1 + 1 + 8 * 3;
  if ((uint64_t)cfg.n_moe_layers() * per_layer * kEntryBytes > in.remaining())
    in.fail("expert table ends early (truncated or corrupt)");
  const int64_t I = cfg.expert_intermediate, H = cfg.hidden;
  const Section& section = c.experts_section;
  std::vector<std::vector<ExpertEntry>> table(layers);
  for (uint32_t l = 0; l < layers; ++l) {
    if (cfg.is_dense((int)l)) continue;
    for (uint32_t e = 0; e < per_layer; ++e) {
      const std::string what = kind + " " + std::to_string(l) + "/" + std::to_string(e);
      ExpertEntry x;
      x.offset = in.get<uint64_t>();
      x.size = in.get<uint64_t>();
      x.stored = in.get<uint64_t>();
      x.crc32 = in.get<uint32_t>();
      x.type = type_of(in, what);
      const uint8_t compression = in.get<uint8_t>();
      if (compression > (uint8_t)Compression::Zstd) in.fail(what + " has unknown compression " + std::to_string(compression));
      x.compression = (Compression)compression;
      if ((x.compression == Compression::Zstd) != (x.stored > 0))
        in.fail(what + " has a bad stored size for its compression");
      if (x.offset % kPage) in.fail(what + " is not page aligned");
      if (x.offset < section.offset || !range_within(x.offset - section.offset, x.bytes_on_disk(), section.size))
        in.fail(what + " lies outside the expert section");
      if (!qtype_supports(x.type, H) || !qtype_supports(x.type, I))
        in.fail(what + ": type " + qtype_name(x.type) + " cannot hold its rows");
      const int64_t shapes[3][2] = {{I, H}, {I, H}, {H, I}};
      uint64_t end = 0;
      for (int p = 0; p < 3; ++p) {
        ExpertPart& part = x.parts[p];
        part.rows = shapes[p][0];
        part.cols = shapes[p][1];
        part.offset = in.get<uint64_t>();
        part.nbytes = (uint64_t)part.rows * qtype_row_bytes(x.type, part.cols);
        if (!range_within(part.offset, part.nbytes, x.size) || part.offset % kTensorAlign)
          in.fail(what + ": the " + kExpertPartNames[p] + " projection lies outside its blob or is misaligned");
        end = std::max(end, part.offset + part.nbytes);
      }
      // A blob holds its three projections and nothing more (the converter ends it at the last
      // one). Bounding the size bounds the expert slots, and for a compressed blob what the
      // decompressor is told it may write: a size near 2^64 rounded the slot size around to
      // 4 KiB while zstd was allowed to write the frame's whole output into it.
      if (x.size > end + kBlobAlign)
        in.fail(what + ": the blob (" + std::to_string(x.size) + " bytes) is larger than its projections (" +
                std::to_string(end) + " bytes)");
      table[l].push_back(x);
    }
  }
  return table;
}

}  // namespace

std::vector<std::vector<BlobRef>> blob_table(const std::vector<std::vector<ExpertEntry>>& experts) {
  std::vector<std::vector<BlobRef>> out;
  for (const auto& row : experts) {
    out.emplace_back();
    for (const ExpertEntry& x : row) out.back().push_back({x.offset, x.size, x.crc32, x.stored});
  }
  return out;
}

Container open_container(const std::string& path) {
  check_is_a_file(path);
  DirectFile file(path, DirectFile::Mode::kBuffered);
  Container c;
  c.path = path;
  c.file_size = file.size();
  read_header(c, file);
  c.manifest_json = read_checked(file, c.manifest, "manifest");
  const std::string index = read_checked(file, c.index, "index");
  Cursor in(index, path + ": container index");
  c.config_values = read_config(in);
  try {
    c.config = config_from_values(c.config_values);
  } catch (const FormatError& e) {
    throw FormatError(path + ": " + e.what());
  }
  read_tensors(c, in);
  c.experts = read_expert_table(c, in, "expert");
  // Optionally, the low-bit copies' table, announced by one byte.
  if (in.remaining()) {
    const size_t left = in.remaining();
    if (in.get<uint8_t>() != kLowBitTable) in.fail(std::to_string(left) + " bytes follow the expert table");
    c.low_bit_experts = read_expert_table(c, in, "low-bit copy of expert");
  }
  if (in.remaining()) in.fail(std::to_string(in.remaining()) + " bytes follow the expert tables");
  return c;
}

}  // namespace edgemoe
