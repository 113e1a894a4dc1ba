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
      return k % kGroup == 0;
  }
  return false;
}

size_t qtype_row_bytes(QType t, int64_t k) {
  // A wrong size here would silently misread every later row, so refuse
  // lengths the type cannot hold instead of rounding.
  if (!qtype_supports(t, k))
    throw FormatError("row length " + std::to_string(k) + " cannot be stored as " + qtype_name(t) +
                      (t == QType::Q8 || t == QType::Q4 ? " (needs a positive multiple of 32)" : ""));
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
  }
  return "unknown";
}

bool qtype_from_int(int v, QType* out) {
  if (v < (int)QType::F32 || v > (int)QType::Q4) return false;
  *out = (QType)v;
  return true;
}

}  // namespace edgemoe
