#include "resident_section.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "../common/bounds.h"
#include "../common/errors.h"
#include "direct_file.h"
#include "expert_store.h"

namespace edgemoe {

ResidentSection::ResidentSection(const std::string& path, uint64_t offset, uint64_t size, uint64_t loaded,
                                 uint32_t crc, bool verify)
    : size_(loaded) {
  DirectFile file(path, DirectFile::Mode::kBuffered);
  if (!range_within(offset, size, file.size()) || loaded > size)
    throw FormatError(path + ": file ends inside the resident section (truncated)");
  // 64-byte alignment: SIMD loads of tensors that start on 64-byte offsets.
  data_ = static_cast<uint8_t*>(std::aligned_alloc(64, allocated_bytes_for(loaded)));
  if (!data_) throw BudgetError("cannot allocate " + std::to_string(loaded) + " bytes for the resident weights");
  try {
    // Read through the page cache but drop it behind us: the resident copy
    // is ours, a second one in the page cache would only crowd the budget.
    file.read_buffered(offset, data_, loaded);
    if (verify) {
      uint32_t sum = crc32_update(0, data_, loaded);
      // the part kept for later: through the checksum in pieces, held nowhere
      std::vector<uint8_t> piece(std::min<uint64_t>(size - loaded, uint64_t(4) << 20));
      for (uint64_t at = loaded; at < size; at += piece.size()) {
        const uint64_t n = std::min<uint64_t>(piece.size(), size - at);
        file.read_buffered(offset + at, piece.data(), n);
        sum = crc32_update(sum, piece.data(), n);
      }
      if (sum != crc)
        throw FormatError(path + ": resident section checksum mismatch: the file is corrupt; re-convert the model");
    }
  } catch (...) {
    std::free(data_);
    data_ = nullptr;
    throw;
  }
}

ResidentSection::~ResidentSection() { std::free(data_); }

}  // namespace edgemoe
