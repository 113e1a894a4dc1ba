#include "qtypes.h"

#include <string>

#include "errors.h"

namespace edgemoe {

bool qtype_supports(QType t, int64_t k) {
  if (k <= 0) return false;
  switch (t) {
    case QType::F32:
    case QType::F16:
      return true;
    case QType::Q8:
    case QType::Q4:
    case QType::Q3:
    case QType::Q2:
    case QType::MXFP4:
      return k % kGroup == 0;
    case QType::Q4K:
      return k % kSuperBlock == 0;
  }
  return false;
}

void unpack_codes(QType t, const void* block, uint8_t codes[kGroup]) {
  switch (t) {
    case QType::Q4: {
      const BlockQ4& b = *(const BlockQ4*)block;
      for (int j = 0; j < kGroup / 2; ++j) codes[j] = b.qs[j] & 0x0f, codes[j + kGroup / 2] = b.qs[j] >> 4;
      return;
    }
    case QType::Q3: {
      const BlockQ3& b = *(const BlockQ3*)block;
      for (int i = 0; i < kGroup; ++i)
        codes[i] = (uint8_t)(((b.ql[i % 8] >> (2 * (i / 8))) & 3) | (((b.qh[i / 8] >> (i % 8)) & 1) << 2));
      return;
    }
    case QType::Q2: {
      const BlockQ2& b = *(const BlockQ2*)block;
      for (int i = 0; i < kGroup; ++i) codes[i] = (uint8_t)((b.qs[i % 8] >> (2 * (i / 8))) & 3);
      return;
    }
    default:
      for (int i = 0; i < kGroup; ++i) codes[i] = 0;
  }
}

size_t qtype_row_bytes(QType t, int64_t k) {
  // A wrong size here would silently misread every later row, so refuse
  // lengths the type cannot hold instead of rounding.
  if (!qtype_supports(t, k))
    throw FormatError("row length " + std::to_string(k) + " cannot be stored as " + qtype_name(t) +
                      (t == QType::Q4K            ? " (needs a positive multiple of 256)"
                       : qtype_is_quantized(t) ? " (needs a positive multiple of 32)"
                                               : ""));
  const size_t n = (size_t)k;
  switch (t) {
    case QType::F32:
      return n * sizeof(float);
    case QType::F16:
      return n * sizeof(uint16_t);
    case QType::Q8:
      return n / kGroup * sizeof(BlockQ8);
    case QType::Q4:
      return n / kGroup * sizeof(BlockQ4);
    case QType::Q3:
      return n / kGroup * sizeof(BlockQ3);
    case QType::Q2:
      return n / kGroup * sizeof(BlockQ2);
    case QType::Q4K:
      return n / kSuperBlock * sizeof(BlockQ4K);
    case QType::MXFP4:
      return n / kGroup * sizeof(BlockMXFP4);
  }
  return 0;
}

const char* qtype_name(QType t) {
  switch (t) {
    case QType::F32:
      return "f32";
    case QType::F16:
      return "f16";
    case QType::Q8:
      return "q8";
    case QType::Q4:
      return "q4";
    case QType::Q3:
      return "q3";
    case QType::Q2:
      return "q2";
    case QType::Q4K:
      return "q4k";
    case QType::MXFP4:
      return "mxfp4";
  }
  return "unknown";
}

bool qtype_from_int(int v, QType* out) {
  if (v < (int)QType::F32 || v > (int)QType::MXFP4) return false;
  *out = (QType)v;
  return true;
}

}  // namespace edgemoe
