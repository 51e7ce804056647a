// structcore/npy.hpp — reading NumPy .npy arrays (the format of numpy.save), no Python needed.
//
// Format (numpy.lib.format, versions 1.0, 2.0 and 3.0):
//   bytes 0..5   magic "\x93NUMPY"
//   byte  6, 7   major, minor version (1.0, 2.0 or 3.0)
//   then         header length HLEN: uint16 little-endian (1.0) or uint32 (2.0, 3.0)
//   then         HLEN bytes: a Python dict literal, ASCII (1.0, 2.0) or UTF-8 (3.0), e.g.
//                "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 32), }" padded with
//                spaces and a final '\n'
//   then         the elements, C order (or Fortran order when fortran_order is True), exactly
//                product(shape) * itemsize bytes.
// Supported dtypes: little-endian or byte-order-free numeric descrs "<f4", "<f8", "<f2",
// "<i1".."<i8", "<u1".."<u8", "|u1", "|i1", "|b1". Big-endian ('>'), structured, string and
// object (pickled) arrays are refused. Fortran-ordered arrays are reordered to C order on read.
// Every length is checked against the input size: a malformed input throws FormatError with a
// message naming the problem; nothing reads outside the input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace structcore {

namespace detail {
/// `text` with every byte outside printable ASCII written as \xNN: messages quote names read
/// from untrusted files, and must stay valid text for every consumer (Python decodes them
/// as UTF-8; a C caller prints them).
inline std::string printable_message(const std::string& text) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f) {
      out += ch;
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}
}  // namespace detail

/// A malformed or unsupported model / array file. Derives from std::invalid_argument, so the
/// Python binding raises ValueError. The message is made printable ASCII (see above).
class FormatError : public std::invalid_argument {
public:
  explicit FormatError(const std::string& what)
      : std::invalid_argument(detail::printable_message(what)) {}
  explicit FormatError(const char* what) : FormatError(std::string(what)) {}
};

/// A file that cannot be opened or read (not a format problem).
class IoError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// An array read from a .npy file.
struct NpyArray {
  std::string descr;                 ///< NumPy dtype string, e.g. "<f4", "|u1"
  char kind = 0;                     ///< 'f' float, 'i' signed, 'u' unsigned, 'b' bool
  std::size_t itemsize = 0;          ///< bytes per element (1, 2, 4 or 8)
  std::vector<std::int64_t> shape;   ///< dimensions (empty for a 0-d array)
  std::vector<std::uint8_t> data;    ///< size() * itemsize bytes, C order, little-endian

  /// Number of elements (product of shape; 1 for a 0-d array).
  std::int64_t size() const noexcept;
  /// The elements as float32: a copy of "<f4" data, or "<f8" / "<f2" data converted (rounded
  /// to nearest). Other dtypes throw FormatError.
  std::vector<float> to_float32() const;
  /// The elements as float64: "<f8" copied, "<f4" / "<f2" converted exactly. Others throw.
  std::vector<double> to_float64() const;
};

/// Largest .npy header accepted (bytes); numpy itself writes a few hundred at most.
inline constexpr std::size_t kNpyMaxHeader = 1 << 20;
/// Largest rank accepted.
inline constexpr std::size_t kNpyMaxRank = 32;

/// Parses a complete .npy file held in memory.
///   bytes: `size` bytes (may be null when size == 0, which throws).
///   what:  a name for messages ("bank.npy in model.npz").
/// The data must be exactly product(shape) * itemsize bytes after the header (no trailing
/// bytes). Throws FormatError. Thread-safe (no shared state).
NpyArray parse_npy(const void* bytes, std::size_t size, const std::string& what = "npy data");

/// Reads and parses the .npy file at `path`. Throws FormatError (malformed) or IoError
/// (cannot open / read the file).
NpyArray read_npy(const std::string& path);

}  // namespace structcore
