#include "resident_section.h"

#include <cstdlib>

#include "../common/bounds.h"
#include "../common/errors.h"
#include "direct_file.h"
#include "expert_store.h"

namespace edgemoe {

ResidentSection::ResidentSection(const std::string& path, uint64_t offset, uint64_t size, uint32_t crc, bool verify)
    : size_(size) {
  DirectFile file(path, DirectFile::Mode::kBuffered);
  if (!range_within(offset, size, file.size()))
    throw FormatError(path + ": file ends inside the resident section (truncated)");
  // 64-byte alignment: SIMD loads of tensors that start on 64-byte offsets.
  data_ = static_cast<uint8_t*>(std::aligned_alloc(64, allocated_bytes_for(size)));
  if (!data_) throw BudgetError("cannot allocate " + std::to_string(size) + " bytes for the resident weights");
  try {
    // Read through the page cache but drop it behind us: the resident copy
    // is ours, a second one in the page cache would only crowd the budget.
    file.read_buffered(offset, data_, size);
    if (verify && crc32(data_, size) != crc)
      throw FormatError(path + ": resident section checksum mismatch: the file is corrupt; re-convert the model");
  } catch (...) {
    std::free(data_);
    data_ = nullptr;
    throw;
  }
}

ResidentSection::~ResidentSection() { std::free(data_); }

}  // namespace edgemoe
