// The resident section of a container (dense weights, norms, routers,
// embeddings): read once at load into one aligned buffer and verified.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace edgemoe {

class ResidentSection {
 public:
  // Reads the first `loaded` bytes of [offset, offset + size) of the file into memory; the rest
  // (tensors kept for later) only passes through the CRC-32 of the whole section. Throws
  // StorageError if the file cannot be read, FormatError on a short file or a CRC-32 mismatch.
  ResidentSection(const std::string& path, uint64_t offset, uint64_t size, uint64_t loaded, uint32_t crc32,
                  bool verify);
  ~ResidentSection();
  ResidentSection(const ResidentSection&) = delete;
  ResidentSection& operator=(const ResidentSection&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }  // the bytes loaded
  // What a section of `size` bytes allocates (the memory plan counts this).
  static uint64_t allocated_bytes_for(uint64_t size) { return (size + 63) / 64 * 64 + 64; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace edgemoe
