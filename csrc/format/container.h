// The .emoe container, read: the only code that reads and checks its header,
// model config, resident tensor table and expert table (docs/FORMAT.md).
//
// Python writes containers (edgemoe/format/container.py) and reads only the
// JSON manifest (tokenizer, chat template, provenance, routing profile), whose
// bytes this reader checks and hands over. Everything the engine trusts -
// offsets, sizes, types, shapes, the config that sizes its buffers - is
// checked here, once, before any of it is used.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../common/qtypes.h"
#include "../common/values.h"
#include "../model/config.h"
#include "../store/expert_store.h"

namespace edgemoe {

constexpr uint32_t kFormatVersion = 2;
constexpr uint64_t kPage = kBlobAlign;    // sections and expert blobs start on this boundary (direct I/O)
constexpr uint64_t kTensorAlign = 64;     // resident tensors and expert parts start on this boundary

// The header: 96 bytes at offset 0, little-endian (docs/FORMAT.md, "Header").
// The byte offset of each field; the CRC at kHeaderCrc covers the bytes before it.
namespace header {
constexpr size_t kMagic = 0, kVersion = 8, kFlags = 12;
constexpr size_t kIndexOffset = 16, kIndexSize = 24, kIndexCrc = 32;
constexpr size_t kManifestOffset = 36, kManifestSize = 44, kManifestCrc = 52;
constexpr size_t kResidentCrc = 56, kResidentOffset = 60, kResidentSize = 68;
constexpr size_t kExpertsOffset = 76, kExpertsSize = 84;
constexpr size_t kHeaderCrc = 92, kBytes = 96;
}  // namespace header

// A region of the file: [offset, offset + size), with the CRC-32 of its bytes
// where the format keeps one.
struct Section {
  uint64_t offset = 0, size = 0;
  uint32_t crc32 = 0;
};

// One resident tensor: `rows` x `cols` of `type`, at `offset` within the resident section.
// Resident tensors under this name prefix are kept for later and not loaded (Container::resident_loaded).
constexpr const char* kKeptForLaterPrefix = "mtp.";
// A vision tower's tensors (model/vision_tower.h): written after the language model's, so an engine
// loaded without images stops before them (Container::resident_text).
constexpr const char* kVisionPrefix = "vision.";

struct TensorEntry {
  std::string name;
  QType type = QType::F32;
  int ndim = 2;  // 1: a vector (rows == 1)
  int64_t rows = 0, cols = 0;
  uint64_t offset = 0, nbytes = 0;
};

// One projection of a routed expert, within its blob.
struct ExpertPart {
  uint64_t offset = 0, nbytes = 0;
  int64_t rows = 0, cols = 0;  // from the config: gate and up [intermediate, hidden], down [hidden, intermediate]
};

enum class Compression : uint8_t { None = 0, Zstd = 1 };

// One routed expert blob.
struct ExpertEntry {
  uint64_t offset = 0, size = 0;  // file offset (page aligned) and payload bytes
  uint64_t stored = 0;            // zstd: bytes in the file (decompressing gives `size`); 0: stored raw
  uint32_t crc32 = 0;             // of the bytes in the file
  QType type = QType::F32;
  Compression compression = Compression::None;
  std::array<ExpertPart, 3> parts;  // gate, up, down
  uint64_t bytes_on_disk() const { return stored ? stored : size; }
};

constexpr const char* kExpertPartNames[3] = {"gate", "up", "down"};
constexpr uint8_t kLowBitTable = 1;  // announces the low-bit copies' table (docs/FORMAT.md)

struct Container {
  std::string path;
  uint32_t version = 0;
  uint64_t file_size = 0;
  Section resident, experts_section, index, manifest;
  Values config_values;  // the config as written (Python sees these: doubles stay doubles)
  ModelConfig config;    // the same, checked
  std::vector<TensorEntry> tensors;
  // The resident bytes an engine loads: the section up to its first tensor kept for later (a
  // multi-token-prediction head, "mtp." names, which the writer puts last), all of it without.
  uint64_t resident_loaded = 0;
  // The part of that a language model alone needs: up to its first vision tower tensor.
  uint64_t resident_text = 0;
  std::vector<std::vector<ExpertEntry>> experts;  // [layer][expert]; a dense layer's row is empty
  // A second, low-bit copy of every routed expert, in the same form; empty if the container has none.
  std::vector<std::vector<ExpertEntry>> low_bit_experts;
  std::string manifest_json;  // the manifest's bytes, checksum verified, not parsed
};

// Reads and checks a container's header, index and manifest bytes (not the
// weights: the resident section's CRC is checked when an engine loads it, each
// expert's when it is read). Throws FormatError naming what is wrong, or
// StorageError when the file cannot be read.
Container open_container(const std::string& path);

// What the expert store needs of each blob: where it is, how big, its checksum.
std::vector<std::vector<BlobRef>> blob_table(const std::vector<std::vector<ExpertEntry>>& experts);

}  // namespace edgemoe
