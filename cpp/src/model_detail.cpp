// Private building blocks of the model-file reader: SHA-256, CRC-32, a stored-only ZIP reader
// and a strict JSON reader. See model_detail.hpp. Written for untrusted input: every read is
// preceded by a bounds check against the size given; failures throw structcore::FormatError.
#include "model_detail.hpp"

#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <system_error>

#include "structcore/npy.hpp"

namespace structcore {
namespace detail {

std::vector<std::uint8_t> read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot open " + what);
  in.seekg(0, std::ios::end);
  const std::streamoff len = in.tellg();
  if (len < 0) throw IoError("cannot determine the size of " + what);
  in.seekg(0, std::ios::beg);
  std::vector<std::uint8_t> buf(static_cast<std::size_t>(len));
  if (len > 0 && !in.read(reinterpret_cast<char*>(buf.data()), len))
    throw IoError("cannot read " + what);
  return buf;
}

// ============================================================================================
// SHA-256 (FIPS 180-4)

namespace {

constexpr std::uint32_t kSha256K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

inline std::uint32_t rotr(std::uint32_t x, int n) noexcept { return (x >> n) | (x << (32 - n)); }

}  // namespace

Sha256::Sha256() noexcept
    : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
         0x5be0cd19},
      buf_{} {}

void Sha256::block(const std::uint8_t* p) noexcept {
  std::uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = (std::uint32_t(p[4 * i]) << 24) | (std::uint32_t(p[4 * i + 1]) << 16) |
           (std::uint32_t(p[4 * i + 2]) << 8) | std::uint32_t(p[4 * i + 3]);
  for (int i = 16; i < 64; ++i) {
    const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6],
                h = h_[7];
  for (int i = 0; i < 64; ++i) {
    const std::uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    const std::uint32_t ch = (e & f) ^ (~e & g);
    const std::uint32_t t1 = h + s1 + ch + kSha256K[i] + w[i];
    const std::uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    const std::uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    const std::uint32_t t2 = s0 + maj;
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h_[0] += a;
  h_[1] += b;
  h_[2] += c;
  h_[3] += d;
  h_[4] += e;
  h_[5] += f;
  h_[6] += g;
  h_[7] += h;
}

void Sha256::update(const void* data, std::size_t size) noexcept {
  const auto* p = static_cast<const std::uint8_t*>(data);
  total_ += size;
  if (buf_len_ > 0) {
    const std::size_t take = std::min(size, 64 - buf_len_);
    std::memcpy(buf_ + buf_len_, p, take);
    buf_len_ += take;
    p += take;
    size -= take;
    if (buf_len_ < 64) return;
    block(buf_);
    buf_len_ = 0;
  }
  while (size >= 64) {
    block(p);
    p += 64;
    size -= 64;
  }
  if (size > 0) {
    std::memcpy(buf_, p, size);
    buf_len_ = size;
  }
}

std::string Sha256::hexdigest() noexcept {
  const std::uint64_t bits = total_ * 8;
  const std::uint8_t pad = 0x80;
  const std::uint8_t zero = 0;
  update(&pad, 1);
  while (buf_len_ != 56) update(&zero, 1);
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = std::uint8_t(bits >> (56 - 8 * i));
  update(len, 8);
  static const char* hex = "0123456789abcdef";
  std::string out(64, '0');
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 4; ++j) {
      const std::uint8_t byte = std::uint8_t(h_[i] >> (24 - 8 * j));
      out[8 * i + 2 * j] = hex[byte >> 4];
      out[8 * i + 2 * j + 1] = hex[byte & 15];
    }
  return out;
}

// ============================================================================================
// CRC-32

namespace {
struct Crc32Table {
  std::uint32_t t[256];
  Crc32Table() noexcept {
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
  }
};
}  // namespace

std::uint32_t crc32(const std::uint8_t* data, std::size_t size) noexcept {
  static const Crc32Table table;  // thread-safe initialisation
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < size; ++i) c = table.t[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// ============================================================================================
// ZIP (PKWARE APPNOTE 6.3: local headers, central directory, end records, ZIP64 extensions)

namespace {

constexpr std::uint32_t kLocalSig = 0x04034b50;
constexpr std::uint32_t kCentralSig = 0x02014b50;
constexpr std::uint32_t kEndSig = 0x06054b50;
constexpr std::uint32_t kEnd64Sig = 0x06064b50;
constexpr std::uint32_t kEnd64LocSig = 0x07064b50;

/// Bounds-checked little-endian reader over [data, data + size).
class Reader {
public:
  Reader(const std::uint8_t* data, std::uint64_t size, const std::string& what)
      : data_(data), size_(size), what_(what) {}

  [[noreturn]] void fail(const std::string& msg) const {
    throw FormatError(what_ + " is not a valid uncompressed ZIP (.npz) archive: " + msg);
  }
  void need(std::uint64_t off, std::uint64_t len, const char* field) const {
    if (off > size_ || len > size_ - off)
      fail(std::string(field) + " at byte " + std::to_string(off) + " (+" +
           std::to_string(len) + " bytes) lies beyond the end of the " + std::to_string(size_) +
           "-byte file (truncated?)");
  }
  std::uint16_t u16(std::uint64_t off) const {
    need(off, 2, "a field");
    return std::uint16_t(data_[off] | (data_[off + 1] << 8));
  }
  std::uint32_t u32(std::uint64_t off) const {
    need(off, 4, "a field");
    return std::uint32_t(data_[off]) | (std::uint32_t(data_[off + 1]) << 8) |
           (std::uint32_t(data_[off + 2]) << 16) | (std::uint32_t(data_[off + 3]) << 24);
  }
  std::uint64_t u64(std::uint64_t off) const {
    need(off, 8, "a field");
    return std::uint64_t(u32(off)) | (std::uint64_t(u32(off + 4)) << 32);
  }
  const std::uint8_t* at(std::uint64_t off) const { return data_ + off; }
  std::uint64_t size() const { return size_; }

private:
  const std::uint8_t* data_;
  std::uint64_t size_;
  const std::string& what_;
};

const char* method_name(std::uint16_t m) {
  switch (m) {
    case 8: return "deflate";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    case 95: return "xz";
    default: return "unknown";
  }
}

/// ZIP64 extra field (id 0x0001) of a header: replaces the 0xFFFFFFFF fields, in the order
/// uncompressed size, compressed size, local header offset (APPNOTE 4.5.3).
void apply_zip64_extra(const Reader& r, std::uint64_t extra, std::uint16_t extra_len,
                       std::uint64_t* usize, std::uint64_t* csize, std::uint64_t* offset,
                       const std::string& entry) {
  std::uint64_t p = extra;
  const std::uint64_t end = extra + extra_len;
  const bool want_u = *usize == 0xFFFFFFFFu, want_c = *csize == 0xFFFFFFFFu;
  const bool want_o = offset != nullptr && *offset == 0xFFFFFFFFu;
  while (p + 4 <= end) {
    const std::uint16_t id = r.u16(p), len = r.u16(p + 2);
    if (p + 4 + len > end) r.fail("entry '" + entry + "': an extra field overruns its header");
    if (id == 0x0001) {
      std::uint64_t q = p + 4;
      const std::uint64_t qend = q + len;
      auto take = [&](std::uint64_t* v) {
        if (q + 8 > qend) r.fail("entry '" + entry + "': ZIP64 extra field too short");
        *v = r.u64(q);
        q += 8;
      };
      if (want_u) take(usize);
      if (want_c) take(csize);
      if (want_o) take(offset);
      return;
    }
    p += 4 + std::uint64_t(len);
  }
  if (want_u || want_c || want_o)
    r.fail("entry '" + entry + "': sizes marked 0xFFFFFFFF but no ZIP64 extra field");
}

}  // namespace

std::vector<ZipEntry> read_stored_zip(const std::uint8_t* data, std::size_t size,
                                      const std::string& what) {
  const Reader r(data, size, what);
  if (size < 22) r.fail("only " + std::to_string(size) + " bytes (an empty ZIP has 22)");
  if (r.u32(0) != kLocalSig && r.u32(0) != kEndSig)
    r.fail("it does not start with a ZIP signature (PK\\x03\\x04)");

  // End of central directory: the last signature whose comment reaches the end of the file.
  std::uint64_t eocd = 0;
  bool found = false;
  const std::uint64_t lowest = size >= 22 + 65535 ? size - 22 - 65535 : 0;
  for (std::uint64_t p = size - 22 + 1; p-- > lowest;) {
    if (r.u32(p) == kEndSig && p + 22 + r.u16(p + 20) == size) {
      eocd = p;
      found = true;
      break;
    }
  }
  if (!found) r.fail("no end-of-central-directory record (truncated file?)");
  std::uint64_t n_entries = r.u16(eocd + 10);
  std::uint64_t cd_size = r.u32(eocd + 12);
  std::uint64_t cd_offset = r.u32(eocd + 16);
  if (r.u16(eocd + 4) != 0 || r.u16(eocd + 6) != 0 || r.u16(eocd + 8) != r.u16(eocd + 10))
    r.fail("multi-disk archives are not supported");
  if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
    if (eocd < 20 || r.u32(eocd - 20) != kEnd64LocSig)
      r.fail("ZIP64 sizes announced but no ZIP64 end-of-central-directory locator");
    const std::uint64_t e64 = r.u64(eocd - 20 + 8);
    r.need(e64, 56, "the ZIP64 end-of-central-directory record");
    if (r.u32(e64) != kEnd64Sig) r.fail("bad ZIP64 end-of-central-directory signature");
    n_entries = r.u64(e64 + 32);
    cd_size = r.u64(e64 + 40);
    cd_offset = r.u64(e64 + 48);
  }
  r.need(cd_offset, cd_size, "the central directory");
  if (n_entries > cd_size / 46)
    r.fail(std::to_string(n_entries) + " entries cannot fit a " + std::to_string(cd_size) +
           "-byte central directory");

  std::vector<ZipEntry> out;
  out.reserve(static_cast<std::size_t>(n_entries));
  std::set<std::string> names;
  std::uint64_t p = cd_offset;
  const std::uint64_t cd_end = cd_offset + cd_size;
  for (std::uint64_t i = 0; i < n_entries; ++i) {
    if (p + 46 > cd_end) r.fail("central directory truncated at entry " + std::to_string(i));
    if (r.u32(p) != kCentralSig)
      r.fail("bad central-directory signature at entry " + std::to_string(i));
    const std::uint16_t flags = r.u16(p + 8), method = r.u16(p + 10);
    const std::uint32_t crc = r.u32(p + 16);
    std::uint64_t csize = r.u32(p + 20), usize = r.u32(p + 24);
    const std::uint16_t nlen = r.u16(p + 28), elen = r.u16(p + 30), clen = r.u16(p + 32);
    std::uint64_t lho = r.u32(p + 42);
    const std::uint64_t rec_end = p + 46 + std::uint64_t(nlen) + elen + clen;
    if (rec_end > cd_end) r.fail("central-directory entry " + std::to_string(i) + " overruns it");
    std::string name(reinterpret_cast<const char*>(r.at(p + 46)), nlen);
    for (char c : name)
      if (static_cast<unsigned char>(c) < 0x20)
        r.fail("entry " + std::to_string(i) + " has a control character in its name");
    apply_zip64_extra(r, p + 46 + nlen, elen, &usize, &csize, &lho, name);
    if (flags & 0x1) r.fail("entry '" + name + "' is encrypted");
    if (method != 0)
      r.fail("entry '" + name + "' is compressed (method " + std::to_string(method) + ", " +
             method_name(method) +
             "); structcore reads only stored (uncompressed) entries, as numpy.savez and "
             "Detector.save write them (numpy.savez_compressed files are not supported)");
    if (csize != usize)
      r.fail("stored entry '" + name + "' has compressed size " + std::to_string(csize) +
             " != uncompressed size " + std::to_string(usize));
    if (!names.insert(name).second) r.fail("entry '" + name + "' appears twice");

    // Local header: signature, method, name; data follows its name and extra field.
    r.need(lho, 30, ("the local header of '" + name + "'").c_str());
    if (r.u32(lho) != kLocalSig) r.fail("bad local-header signature of entry '" + name + "'");
    if (r.u16(lho + 8) != method) r.fail("entry '" + name + "': local/central method differ");
    const std::uint16_t lnlen = r.u16(lho + 26), lelen = r.u16(lho + 28);
    r.need(lho + 30, std::uint64_t(lnlen) + lelen, ("the local header of '" + name + "'").c_str());
    if (lnlen != nlen || std::memcmp(r.at(lho + 30), name.data(), nlen) != 0)
      r.fail("entry '" + name + "': local and central names differ");
    const std::uint64_t off = lho + 30 + lnlen + lelen;
    r.need(off, usize, ("the data of entry '" + name + "'").c_str());
    if (crc32(r.at(off), static_cast<std::size_t>(usize)) != crc)
      r.fail("CRC-32 mismatch in entry '" + name + "' (corrupted data)");
    out.push_back(ZipEntry{std::move(name), off, usize});
    p = rec_end;
  }
  return out;
}

// ============================================================================================
// JSON

const Json* Json::find(std::string_view key) const noexcept {
  if (type != Type::Object) return nullptr;
  for (const auto& kv : object)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

namespace {

class JsonParser {
public:
  JsonParser(std::string_view text, const std::string& what) : s_(text), what_(what) {}

  Json document() {
    ws();
    Json v = value(0);
    ws();
    if (pos_ != s_.size()) fail("unexpected content after the JSON document");
    return v;
  }

private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw FormatError(what_ + ": " + msg + " at byte " + std::to_string(pos_));
  }
  bool eof() const { return pos_ >= s_.size(); }
  char peek() const { return eof() ? '\0' : s_[pos_]; }
  void ws() {
    while (!eof() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c || eof()) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  Json value(int depth) {
    if (depth > kJsonMaxDepth) fail("nesting deeper than " + std::to_string(kJsonMaxDepth));
    if (eof()) fail("unexpected end of the JSON text");
    Json v;
    const char c = s_[pos_];
    if (c == '{') {
      v.type = Json::Type::Object;
      ++pos_;
      ws();
      if (peek() == '}' && !eof()) {
        ++pos_;
        return v;
      }
      std::set<std::string> keys;
      while (true) {
        ws();
        if (peek() != '"' || eof()) fail("expected a string key");
        std::string key = string();
        if (!keys.insert(key).second) fail("duplicate key \"" + key + "\"");
        ws();
        expect(':');
        ws();
        Json member = value(depth + 1);
        v.object.emplace_back(std::move(key), std::move(member));
        ws();
        if (peek() == ',' && !eof()) {
          ++pos_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.type = Json::Type::Array;
      ++pos_;
      ws();
      if (peek() == ']' && !eof()) {
        ++pos_;
        return v;
      }
      while (true) {
        ws();
        v.array.push_back(value(depth + 1));
        ws();
        if (peek() == ',' && !eof()) {
          ++pos_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.type = Json::Type::String;
      v.string = string();
      return v;
    }
    if (literal("true")) {
      v.type = Json::Type::Bool;
      v.boolean = true;
      return v;
    }
    if (literal("false")) {
      v.type = Json::Type::Bool;
      return v;
    }
    if (literal("null")) return v;
    if (literal("NaN") || literal("Infinity") || literal("-Infinity"))
      fail("NaN/Infinity are not valid JSON (the model must hold finite numbers)");
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    fail(std::string("unexpected character '") + c + "'");
  }

  Json number() {
    const std::size_t start = pos_;
    auto digit = [&] { return !eof() && s_[pos_] >= '0' && s_[pos_] <= '9'; };
    bool integral = true;
    if (peek() == '-') ++pos_;
    if (!digit()) fail("malformed number");
    if (s_[pos_] == '0') {
      ++pos_;
      if (digit()) fail("leading zeros are not valid JSON");
    } else {
      while (digit()) ++pos_;
    }
    if (!eof() && s_[pos_] == '.') {
      integral = false;
      ++pos_;
      if (!digit()) fail("malformed number (no digits after '.')");
      while (digit()) ++pos_;
    }
    if (!eof() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (!eof() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (!digit()) fail("malformed number (no exponent digits)");
      while (digit()) ++pos_;
    }
    Json v;
    v.type = Json::Type::Number;
    v.integral = integral;
    const char* first = s_.data() + start;
    const char* last = s_.data() + pos_;
    const auto res = std::from_chars(first, last, v.number);
    if (res.ec != std::errc() || res.ptr != last || !std::isfinite(v.number)) {
      // from_chars reports out-of-range for both overflow and underflow; underflow to 0 or a
      // subnormal is harmless, overflow is not.
      if (res.ec == std::errc::result_out_of_range) {
        // Decide by the exponent's sign via strtod-free reasoning: a tiny value -> 0.
        bool tiny = false;
        for (const char* q = first; q < last; ++q)
          if (*q == 'e' || *q == 'E') tiny = q + 1 < last && q[1] == '-';
        if (!tiny) fail("number out of the range of a double");
        v.number = 0.0;
      } else {
        fail("malformed number");
      }
    }
    if (integral) {
      std::int64_t iv = 0;
      const auto ri = std::from_chars(first, last, iv);
      v.integer_fits = ri.ec == std::errc() && ri.ptr == last;
      v.integer = v.integer_fits ? iv : 0;
    }
    return v;
  }

  void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(char(cp));
    } else if (cp < 0x800) {
      out.push_back(char(0xC0 | (cp >> 6)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(char(0xE0 | (cp >> 12)));
      out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(char(0xF0 | (cp >> 18)));
      out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    }
  }

  std::uint32_t hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= std::uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') v |= std::uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= std::uint32_t(c - 'A' + 10);
      else fail("bad hexadecimal digit in a \\u escape");
    }
    return v;
  }

  /// One UTF-8 sequence starting at pos_ (validated: shortest form, no surrogates, <= U+10FFFF).
  void utf8_char(std::string& out) {
    const auto b0 = static_cast<unsigned char>(s_[pos_]);
    int n = 0;
    std::uint32_t cp = 0;
    if (b0 >= 0xC2 && b0 <= 0xDF) { n = 1; cp = b0 & 0x1F; }
    else if (b0 >= 0xE0 && b0 <= 0xEF) { n = 2; cp = b0 & 0x0F; }
    else if (b0 >= 0xF0 && b0 <= 0xF4) { n = 3; cp = b0 & 0x07; }
    else fail("invalid UTF-8");
    if (pos_ + 1 + n > s_.size()) fail("truncated UTF-8 sequence");
    for (int i = 1; i <= n; ++i) {
      const auto b = static_cast<unsigned char>(s_[pos_ + i]);
      if ((b & 0xC0) != 0x80) fail("invalid UTF-8");
      cp = (cp << 6) | (b & 0x3F);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
      fail("invalid UTF-8");
    out.append(s_.data() + pos_, std::size_t(n) + 1);
    pos_ += std::size_t(n) + 1;
  }

  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (eof()) fail("unterminated string");
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail("control character in a string");
      if (c >= 0x80) {
        utf8_char(out);
        continue;
      }
      if (c != '\\') {
        out.push_back(char(c));
        ++pos_;
        continue;
      }
      ++pos_;
      if (eof()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!(pos_ + 2 <= s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u'))
              fail("lone high surrogate in a \\u escape");
            pos_ += 2;
            const std::uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("invalid surrogate pair in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail(std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  std::string_view s_;
  const std::string& what_;
  std::size_t pos_ = 0;
};

}  // namespace

Json parse_json(std::string_view text, const std::string& what) {
  return JsonParser(text, what).document();
}

}  // namespace detail
}  // namespace structcore
