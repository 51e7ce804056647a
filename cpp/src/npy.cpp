// Reading .npy arrays (numpy.lib.format 1.0 / 2.0 / 3.0); see structcore/npy.hpp.
#include "structcore/npy.hpp"

#include <cstring>
#include <limits>
#include <string_view>

#include "model_detail.hpp"  // read_file
#include "structcore/knn.hpp"  // half_to_float

namespace structcore {

namespace {

[[noreturn]] void bad(const std::string& what, const std::string& msg) {
  throw FormatError(what + " is not a valid .npy array: " + msg);
}

/// Parser of the header's Python dict literal:
///   {'descr': '<f4', 'fortran_order': False, 'shape': (10, 32), }
/// Accepted: the three keys exactly once each, in any order; single- or double-quoted strings
/// without escapes; True/False; a tuple of non-negative decimal integers ("()" or "(n,)" too);
/// an optional trailing comma; spaces / newlines anywhere between tokens.
class HeaderParser {
public:
  HeaderParser(std::string_view s, const std::string& what) : s_(s), what_(what) {}

  void parse(std::string* descr, bool* fortran, std::vector<std::int64_t>* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    ws();
    expect('{');
    while (true) {
      ws();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = str();
      ws();
      expect(':');
      ws();
      if (key == "descr") {
        if (have_descr) fail("key 'descr' appears twice");
        if (peek() != '\'' && peek() != '"')
          fail("'descr' is not a simple dtype string (structured dtypes are not supported)");
        *descr = str();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_fortran) fail("key 'fortran_order' appears twice");
        if (word("True")) *fortran = true;
        else if (word("False")) *fortran = false;
        else fail("'fortran_order' must be True or False");
        have_fortran = true;
      } else if (key == "shape") {
        if (have_shape) fail("key 'shape' appears twice");
        tuple(shape);
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "'");
      }
      ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      ws();
      expect('}');
      break;
    }
    ws();
    if (pos_ != s_.size()) fail("unexpected text after the header dict");
    if (!have_descr || !have_fortran || !have_shape)
      fail("the header must have the keys 'descr', 'fortran_order' and 'shape'");
  }

private:
  [[noreturn]] void fail(const std::string& msg) const { bad(what_, "header: " + msg); }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (pos_ >= s_.size() || s_[pos_] != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool word(std::string_view w) {
    if (s_.substr(pos_, w.size()) == w) {
      pos_ += w.size();
      return true;
    }
    return false;
  }
  std::string str() {
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string");
    ++pos_;
    const std::size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != q) {
      if (s_[pos_] == '\\') fail("escapes in header strings are not supported");
      ++pos_;
    }
    if (pos_ >= s_.size()) fail("unterminated string");
    std::string out(s_.substr(start, pos_ - start));
    ++pos_;
    if (out.size() > 64) fail("string too long");
    return out;
  }
  void tuple(std::vector<std::int64_t>* shape) {
    expect('(');
    shape->clear();
    while (true) {
      ws();
      if (peek() == ')') {
        ++pos_;
        break;
      }
      if (shape->size() >= kNpyMaxRank)
        fail("more than " + std::to_string(kNpyMaxRank) + " dimensions");
      if (!(peek() >= '0' && peek() <= '9')) fail("shape entries must be non-negative integers");
      std::int64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const int d = s_[pos_++] - '0';
        if (v > (std::numeric_limits<std::int64_t>::max() - d) / 10) fail("shape entry too large");
        v = v * 10 + d;
      }
      shape->push_back(v);
      ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      ws();
      expect(')');
      break;
    }
    // A 1-element tuple must be written "(n,)" in Python, but "(n)" is an int in parentheses:
    // numpy would reject that literal as a shape; so do we.
  }

  std::string_view s_;
  const std::string& what_;
  std::size_t pos_ = 0;
};

void parse_descr(const std::string& descr, const std::string& what, char* kind,
                 std::size_t* itemsize) {
  if (descr.size() < 3) bad(what, "unsupported dtype '" + descr + "'");
  const char order = descr[0];
  const char k = descr[1];
  const std::string num = descr.substr(2);
  std::size_t size = 0;
  if (num == "1") size = 1;
  else if (num == "2") size = 2;
  else if (num == "4") size = 4;
  else if (num == "8") size = 8;
  else bad(what, "unsupported dtype '" + descr + "'");
  const bool kind_ok = (k == 'f' && size >= 2) || k == 'i' || k == 'u' || (k == 'b' && size == 1);
  if (!kind_ok) bad(what, "unsupported dtype '" + descr + "' (numeric arrays only)");
  if (order == '>')
    bad(what, "big-endian dtype '" + descr + "' is not supported (save little-endian arrays)");
  if (!(order == '<' || (order == '|' && size == 1)))
    bad(what, "unsupported dtype '" + descr + "'");
  *kind = k;
  *itemsize = size;
}

}  // namespace

std::int64_t NpyArray::size() const noexcept {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

std::vector<float> NpyArray::to_float32() const {
  const std::size_t n = data.size() / (itemsize ? itemsize : 1);
  std::vector<float> out(n);
  if (descr == "<f4") {
    if (n) std::memcpy(out.data(), data.data(), n * 4);
  } else if (descr == "<f8") {
    for (std::size_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, data.data() + 8 * i, 8);
      out[i] = static_cast<float>(v);
    }
  } else if (descr == "<f2") {
    for (std::size_t i = 0; i < n; ++i) {
      std::uint16_t h;
      std::memcpy(&h, data.data() + 2 * i, 2);
      out[i] = half_to_float(h);
    }
  } else {
    throw FormatError("expected a float array (<f4, <f8 or <f2); got dtype '" + descr + "'");
  }
  return out;
}

std::vector<double> NpyArray::to_float64() const {
  const std::size_t n = data.size() / (itemsize ? itemsize : 1);
  std::vector<double> out(n);
  if (descr == "<f8") {
    if (n) std::memcpy(out.data(), data.data(), n * 8);
  } else if (descr == "<f4" || descr == "<f2") {
    const std::vector<float> f = to_float32();
    for (std::size_t i = 0; i < n; ++i) out[i] = f[i];
  } else {
    throw FormatError("expected a float array (<f8, <f4 or <f2); got dtype '" + descr + "'");
  }
  return out;
}

NpyArray parse_npy(const void* bytes, std::size_t size, const std::string& what) {
  const auto* p = static_cast<const std::uint8_t*>(bytes);
  static const std::uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (p == nullptr || size < 10) bad(what, "only " + std::to_string(size) + " bytes");
  if (std::memcmp(p, magic, 6) != 0) bad(what, "no \\x93NUMPY magic at its start");
  const int major = p[6], minor = p[7];
  std::size_t hlen = 0, hstart = 0;
  if (major == 1 && minor == 0) {
    hlen = std::size_t(p[8]) | (std::size_t(p[9]) << 8);
    hstart = 10;
  } else if ((major == 2 || major == 3) && minor == 0) {
    if (size < 12) bad(what, "truncated header length");
    hlen = std::size_t(p[8]) | (std::size_t(p[9]) << 8) | (std::size_t(p[10]) << 16) |
           (std::size_t(p[11]) << 24);
    hstart = 12;
  } else {
    bad(what, "unsupported format version " + std::to_string(major) + "." + std::to_string(minor) +
                  " (1.0, 2.0 and 3.0 are read)");
  }
  if (hlen > kNpyMaxHeader) bad(what, "header of " + std::to_string(hlen) + " bytes is too long");
  if (hlen > size - hstart)
    bad(what, "header of " + std::to_string(hlen) + " bytes runs past the end (truncated?)");
  const std::string_view header(reinterpret_cast<const char*>(p + hstart), hlen);
  if (major < 3)
    for (char c : header)
      if (static_cast<unsigned char>(c) >= 0x80) bad(what, "non-ASCII header (version 1/2)");

  NpyArray out;
  bool fortran = false;
  HeaderParser(header, what).parse(&out.descr, &fortran, &out.shape);
  parse_descr(out.descr, what, &out.kind, &out.itemsize);

  // Element count and byte size with overflow checks.
  std::uint64_t count = 1;
  bool zero = false;
  for (std::int64_t d : out.shape) {
    if (d == 0) zero = true;
  }
  if (!zero) {
    for (std::int64_t d : out.shape) {
      const auto ud = static_cast<std::uint64_t>(d);
      if (count > std::numeric_limits<std::uint64_t>::max() / ud) bad(what, "shape too large");
      count *= ud;
    }
  } else {
    count = 0;
  }
  if (count > std::numeric_limits<std::uint64_t>::max() / out.itemsize) bad(what, "shape too large");
  const std::uint64_t nbytes = count * out.itemsize;
  const std::uint64_t avail = size - hstart - hlen;
  if (nbytes != avail)
    bad(what, "shape " + [&] {
      std::string s = "(";
      for (std::size_t i = 0; i < out.shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(out.shape[i]);
      return s + (out.shape.size() == 1 ? ",)" : ")");
    }() + " of dtype '" + out.descr + "' needs " + std::to_string(nbytes) +
                  " data bytes but the array holds " + std::to_string(avail) +
                  (nbytes > avail ? " (truncated?)" : " (trailing bytes)"));
  const std::uint8_t* src = p + hstart + hlen;
  out.data.resize(static_cast<std::size_t>(nbytes));
  if (!fortran || out.shape.size() < 2 || count == 0) {
    if (nbytes) std::memcpy(out.data.data(), src, static_cast<std::size_t>(nbytes));
  } else {
    // Fortran order -> C order: walk C-order multi-indices, read at the Fortran offset.
    const std::size_t rank = out.shape.size();
    std::vector<std::uint64_t> fstride(rank), idx(rank, 0);
    std::uint64_t s = 1;
    for (std::size_t k = 0; k < rank; ++k) {
      fstride[k] = s;
      s *= static_cast<std::uint64_t>(out.shape[k]);
    }
    for (std::uint64_t i = 0; i < count; ++i) {
      std::uint64_t off = 0;
      for (std::size_t k = 0; k < rank; ++k) off += idx[k] * fstride[k];
      std::memcpy(out.data.data() + i * out.itemsize, src + off * out.itemsize, out.itemsize);
      for (std::size_t k = rank; k-- > 0;) {
        if (++idx[k] < static_cast<std::uint64_t>(out.shape[k])) break;
        idx[k] = 0;
      }
    }
  }
  return out;
}

NpyArray read_npy(const std::string& path) {
  const std::string what = "'" + path + "'";
  const std::vector<std::uint8_t> buf = detail::read_file(path, what);
  return parse_npy(buf.data(), buf.size(), what);
}

}  // namespace structcore
