// model_detail.hpp — private building blocks of the model-file reader (not installed).
//
// Everything here reads untrusted bytes: every function checks every offset against the size
// it was given and throws structcore::FormatError with a message naming what is wrong; none
// reads outside [data, data + size).
//
//  * sha256:          FIPS 180-4 SHA-256 (incremental), for the model checksum.
//  * crc32:           the ZIP CRC-32 (IEEE 802.3 polynomial, reflected, 0xEDB88320).
//  * read_stored_zip: the entries of a ZIP archive whose entries are all stored
//                     (uncompressed), as numpy.savez writes them (ZIP64 extensions included).
//  * Json / parse_json: a strict RFC 8259 JSON reader (UTF-8, depth-limited, no duplicate
//                     keys, numbers parsed with std::from_chars: correctly rounded).
//  * read_file:       a whole file's bytes (structcore::IoError when it cannot be read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace structcore {
namespace detail {

/// Every byte of the file at `path`. Throws structcore::IoError naming `what` (e.g. "'x.npy'"
/// or "the model file 'm.npz'") when it cannot be opened, sized or read.
std::vector<std::uint8_t> read_file(const std::string& path, const std::string& what);

// ---- SHA-256 -------------------------------------------------------------------------------
class Sha256 {
public:
  Sha256() noexcept;
  /// Appends `size` bytes at `data` (data may be null when size == 0).
  void update(const void* data, std::size_t size) noexcept;
  /// The digest as 64 lowercase hexadecimal characters; the object must not be updated after.
  std::string hexdigest() noexcept;

private:
  void block(const std::uint8_t* p) noexcept;
  std::uint32_t h_[8];
  std::uint8_t buf_[64];
  std::size_t buf_len_ = 0;
  std::uint64_t total_ = 0;
};

// ---- CRC-32 --------------------------------------------------------------------------------
/// CRC-32 of `size` bytes at `data` (as zlib.crc32(data) with start value 0).
std::uint32_t crc32(const std::uint8_t* data, std::size_t size) noexcept;

// ---- ZIP -----------------------------------------------------------------------------------
struct ZipEntry {
  std::string name;         ///< file name inside the archive
  std::uint64_t offset;     ///< start of the entry's data, from the start of the archive
  std::uint64_t size;       ///< bytes of data (stored: compressed size == uncompressed size)
};

/// Parses the archive's central directory and checks every entry: not encrypted, stored
/// (compression method 0; anything else is refused naming the method), sizes consistent,
/// local header present and agreeing, data inside the archive, CRC-32 matching, names unique.
/// `what` names the archive in messages. Throws FormatError.
std::vector<ZipEntry> read_stored_zip(const std::uint8_t* data, std::size_t size,
                                      const std::string& what);

// ---- JSON ----------------------------------------------------------------------------------
struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  bool integral = false;        ///< the number literal had no fraction and no exponent
  std::int64_t integer = 0;     ///< its value when integral and within int64
  bool integer_fits = false;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;  ///< in file order, keys unique

  /// Member `key` of an object, or nullptr (also when this is not an object).
  const Json* find(std::string_view key) const noexcept;
};

/// Maximum nesting depth accepted by parse_json.
inline constexpr int kJsonMaxDepth = 64;

/// Parses one JSON document (RFC 8259; surrounding whitespace allowed). Rejects: invalid
/// UTF-8, control characters in strings, lone surrogates, duplicate object keys, NaN/Infinity
/// literals, numbers that overflow a double, nesting deeper than kJsonMaxDepth, trailing
/// content. Throws FormatError("<what>: ... at byte N").
Json parse_json(std::string_view text, const std::string& what);

}  // namespace detail
}  // namespace structcore
