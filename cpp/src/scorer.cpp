// structcore::Scorer: loads a Detector.save model file and scores patch features with the
// C++ kernels. See structcore/scorer.hpp (what), docs/CPP.md (the file format) and
// python/structcore/io.py + detector.py (the Python side this must agree with).
#include "structcore/scorer.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <system_error>

#include "model_detail.hpp"
#include "scorer_stages.hpp"
#include "structcore/common.hpp"
#include "structcore/descriptors.hpp"
#include "structcore/knn.hpp"
#include "structcore/postprocess.hpp"

#ifndef STRUCTCORE_VERSION
#define STRUCTCORE_VERSION "unknown"
#endif

namespace structcore {

const char* version() noexcept { return STRUCTCORE_VERSION; }

namespace {

constexpr const char* kFormatName = "structcore.detector";
// Versions read: 1 (checksum over the arrays), 2 (checksum over the stored metadata bytes,
// its own 64 hex digits replaced by '0', then "\n", then the arrays) and 3 (2 plus the
// 'weights' entry of calibration="synthetic"), as python/structcore/io.py.
constexpr int kFormatVersionMin = 1;
constexpr int kFormatVersion = 3;
/// The first version that may hold the 'weights' entry.
constexpr int kWeightsVersion = 3;
/// Detector.predict uses describe()'s defaults for these two.
constexpr double kTopRatio = 0.01;
constexpr int kConnectivity = 8;

/// Python's round() of a non-negative double to an integer: half to even.
std::int64_t round_half_even(double x) {
  const double f = std::floor(x);
  const double diff = x - f;
  std::int64_t r = static_cast<std::int64_t>(f);
  if (diff > 0.5 || (diff == 0.5 && (r % 2 != 0))) ++r;
  return r;
}

std::int64_t checked_mul(std::int64_t a, std::int64_t b, const char* what) {
  if (a < 0 || b < 0 || (a != 0 && b > std::numeric_limits<std::int64_t>::max() / a))
    throw std::invalid_argument(std::string(what) + ": size overflows int64");
  return a * b;
}

// ---- model loading ---------------------------------------------------------------------------

class ModelReader {
public:
  explicit ModelReader(std::string name) : name_(std::move(name)) {}

  [[noreturn]] void bad(const std::string& why) const {
    throw FormatError(name_ + " is not a valid structcore detector file: " + why);
  }

  const detail::Json& member(const detail::Json& obj, const char* key,
                             const std::string& path) const {
    if (obj.type != detail::Json::Type::Object) bad("metadata '" + path + "' is not an object");
    const detail::Json* v = obj.find(key);
    if (v == nullptr) bad("metadata field '" + join(path, key) + "' is missing");
    return *v;
  }
  static std::string join(const std::string& path, const char* key) {
    return path.empty() ? std::string(key) : path + "." + key;
  }
  std::string str(const detail::Json& obj, const char* key, const std::string& path) const {
    const detail::Json& v = member(obj, key, path);
    if (v.type != detail::Json::Type::String)
      bad("metadata field '" + join(path, key) + "' must be a string");
    return v.string;
  }
  double number(const detail::Json& obj, const char* key, const std::string& path) const {
    const detail::Json& v = member(obj, key, path);
    if (v.type != detail::Json::Type::Number || !std::isfinite(v.number))
      bad("metadata field '" + join(path, key) + "' must be a finite number");
    return v.number;
  }
  std::int64_t integer(const detail::Json& obj, const char* key, const std::string& path,
                       std::int64_t low, std::int64_t high) const {
    const detail::Json& v = member(obj, key, path);
    if (v.type != detail::Json::Type::Number || !v.integral || !v.integer_fits ||
        v.integer < low || v.integer > high)
      bad("metadata field '" + join(path, key) + "' must be an integer in [" +
          std::to_string(low) + ", " + std::to_string(high) + "]");
    return v.integer;
  }
  bool boolean(const detail::Json& obj, const char* key, const std::string& path) const {
    const detail::Json& v = member(obj, key, path);
    if (v.type != detail::Json::Type::Bool)
      bad("metadata field '" + join(path, key) + "' must be true or false");
    return v.boolean;
  }
  std::vector<std::string> strings(const detail::Json& obj, const char* key,
                                   const std::string& path) const {
    const detail::Json& v = member(obj, key, path);
    if (v.type != detail::Json::Type::Array)
      bad("metadata field '" + join(path, key) + "' must be a list of strings");
    std::vector<std::string> out;
    for (const auto& e : v.array) {
      if (e.type != detail::Json::Type::String)
        bad("metadata field '" + join(path, key) + "' must be a list of strings");
      out.push_back(e.string);
    }
    return out;
  }

  const std::string& name() const { return name_; }

private:
  std::string name_;
};

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string names_str(const std::set<std::string>& names) {
  std::string s = "[";
  bool first = true;
  for (const auto& n : names) {
    s += (first ? "'" : ", '") + n + "'";
    first = false;
  }
  return s + "]";
}

/// A descriptor component name -> (code, quantile), as structcore._components._parse_one.
bool parse_component(const std::string& name, std::int32_t* code, double* q) {
  std::size_t n = 0;
  const DescriptorCodeInfo* table = descriptor_code_table(&n);
  if (name == "q99") {
    *code = static_cast<std::int32_t>(DescriptorCode::Quantile);
    *q = 0.99;
    return true;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (table[i].code == static_cast<std::int32_t>(DescriptorCode::Quantile)) continue;
    if (name == table[i].name) {
      *code = table[i].code;
      *q = 0.0;
      return true;
    }
  }
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  // "q<percent>": q followed by 1..3 digits, value <= 100.
  if (name.size() >= 2 && name.size() <= 4 && name[0] == 'q' &&
      std::all_of(name.begin() + 1, name.end(), is_digit)) {
    const int pct = std::stoi(name.substr(1));
    if (pct > 100) return false;
    *code = static_cast<std::int32_t>(DescriptorCode::Quantile);
    *q = pct / 100.0;
    return true;
  }
  // "q:<fraction>": (\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?, value in [0, 1].
  if (name.size() > 2 && name[0] == 'q' && name[1] == ':') {
    const std::string f = name.substr(2);
    std::size_t i = 0, digits = 0;
    while (i < f.size() && is_digit(f[i])) ++i, ++digits;
    if (i < f.size() && f[i] == '.') {
      ++i;
      while (i < f.size() && is_digit(f[i])) ++i, ++digits;
    }
    if (digits == 0) return false;
    if (i < f.size() && (f[i] == 'e' || f[i] == 'E')) {
      ++i;
      if (i < f.size() && (f[i] == '+' || f[i] == '-')) ++i;
      std::size_t ed = 0;
      while (i < f.size() && is_digit(f[i])) ++i, ++ed;
      if (ed == 0) return false;
    }
    if (i != f.size()) return false;
    double v = 0.0;
    const auto res = std::from_chars(f.data(), f.data() + f.size(), v);
    if (res.ec != std::errc() || !(v >= 0.0 && v <= 1.0)) return false;
    *code = static_cast<std::int32_t>(DescriptorCode::Quantile);
    *q = v;
    return true;
  }
  return false;
}

}  // namespace

// The Python detector's stages, by name (scorer_stages.hpp, docs/ARCHITECTURE.md).
struct Scorer::State {
  ModelInfo info;
  stages::MemoryBank bank;
  stages::AnomalyMapper mapper;
  stages::Descriptor descriptor;
  stages::StructCalibrator calibrator;
};

Scorer Scorer::from_memory(const void* data, std::size_t size, const std::string& name) {
  const ModelReader rd(name);
  if (data == nullptr && size > 0) throw std::invalid_argument("from_memory: data is null");
  const auto* bytes = static_cast<const std::uint8_t*>(data);
  static const std::uint8_t empty = 0;
  if (bytes == nullptr) bytes = &empty;

  // 1. The archive and its arrays.
  const std::vector<detail::ZipEntry> entries = detail::read_stored_zip(bytes, size, name);
  std::map<std::string, NpyArray> arrays;
  for (const auto& e : entries) {
    if (e.name.size() <= 4 || e.name.compare(e.name.size() - 4, 4, ".npy") != 0)
      rd.bad("archive entry '" + e.name + "' is not a .npy array");
    const std::string key = e.name.substr(0, e.name.size() - 4);
    arrays.emplace(key, parse_npy(bytes + e.offset, static_cast<std::size_t>(e.size),
                                  "entry '" + e.name + "' of " + name));
  }

  // 2. The metadata document.
  auto mit = arrays.find("metadata");
  if (mit == arrays.end()) rd.bad("no 'metadata' entry");
  if (mit->second.descr != "|u1" || mit->second.shape.size() != 1)
    rd.bad("the metadata entry is not a UTF-8 byte array");
  const std::string text(mit->second.data.begin(), mit->second.data.end());
  arrays.erase(mit);
  const detail::Json meta = detail::parse_json(text, name + ": the metadata is not valid JSON");
  if (meta.type != detail::Json::Type::Object) rd.bad("the metadata is not a JSON object");

  const detail::Json* fmt = meta.find("format");
  if (fmt == nullptr || fmt->type != detail::Json::Type::String || fmt->string != kFormatName)
    rd.bad(std::string("format is ") +
           (fmt && fmt->type == detail::Json::Type::String ? "'" + fmt->string + "'" : "missing") +
           ", expected '" + kFormatName + "'");
  const detail::Json* ver = meta.find("version");
  if (ver == nullptr || ver->type != detail::Json::Type::Number ||
      !(ver->number == 1 || ver->number == 2 || ver->number == kFormatVersion)) {
    std::string got = "missing";
    if (ver != nullptr && ver->type == detail::Json::Type::Number) {
      char buf[64];
      const auto r = std::to_chars(buf, buf + sizeof buf, ver->number);
      got = std::string(buf, r.ptr);
    } else if (ver != nullptr) {
      got = "not a number";
    }
    rd.bad("format version " + got + " is not supported by this structcore (reads versions " +
           std::to_string(kFormatVersionMin) + " to " + std::to_string(kFormatVersion) + ")");
  }

  // 3. Array entries against the metadata, then the checksum.
  const detail::Json* declared = meta.find("arrays");
  std::set<std::string> have;
  for (const auto& kv : arrays) have.insert(kv.first);
  std::set<std::string> want;
  if (declared != nullptr && declared->type == detail::Json::Type::Object)
    for (const auto& kv : declared->object) want.insert(kv.first);
  if (declared == nullptr || declared->type != detail::Json::Type::Object || want != have)
    rd.bad("array entries " + names_str(have) + " do not match the metadata's " +
           (declared && declared->type == detail::Json::Type::Object ? names_str(want)
                                                                     : std::string("None")));
  for (const auto& kv : declared->object) {
    const NpyArray& a = arrays.at(kv.first);
    const detail::Json& spec = kv.second;
    bool ok = spec.type == detail::Json::Type::Object;
    const detail::Json* dt = ok ? spec.find("dtype") : nullptr;
    const detail::Json* sh = ok ? spec.find("shape") : nullptr;
    ok = ok && dt && dt->type == detail::Json::Type::String && dt->string == a.descr && sh &&
         sh->type == detail::Json::Type::Array && sh->array.size() == a.shape.size();
    for (std::size_t i = 0; ok && i < a.shape.size(); ++i) {
      const detail::Json& d = sh->array[i];
      ok = d.type == detail::Json::Type::Number && d.integral && d.integer_fits &&
           d.integer == a.shape[i];
    }
    if (!ok)
      rd.bad("array '" + kv.first + "' has dtype " + a.descr + " shape " + shape_str(a.shape) +
             ", which the metadata does not declare");
  }
  {
    const int version = static_cast<int>(ver->number);
    const detail::Json* sum = meta.find("checksum");
    const bool well_formed =
        sum != nullptr && sum->type == detail::Json::Type::String && sum->string.size() == 64 &&
        sum->string.find_first_not_of("0123456789abcdef") == std::string::npos;
    detail::Sha256 h;
    if (version >= 2) {
      // The digits must occur exactly once (quoted) in the stored bytes; hash them zeroed.
      const std::string quoted = well_formed ? "\"" + sum->string + "\"" : std::string();
      const std::size_t at = well_formed ? text.find(quoted) : std::string::npos;
      if (at == std::string::npos || text.find(quoted, at + 1) != std::string::npos)
        rd.bad("checksum missing or malformed (64 lowercase hex digits, once)");
      std::string zeroed = text;
      zeroed.replace(at + 1, 64, std::string(64, '0'));
      h.update(zeroed.data(), zeroed.size());
      h.update("\n", 1);
    }
    for (const auto& kv : arrays) {  // std::map: sorted by name, as Python's sorted()
      const NpyArray& a = kv.second;
      std::string head = kv.first + "|" + a.descr + "|";
      for (std::size_t i = 0; i < a.shape.size(); ++i)
        head += (i ? "," : "") + std::to_string(a.shape[i]);
      head += "|";
      h.update(head.data(), head.size());
      h.update(a.data.data(), a.data.size());
    }
    if (!well_formed || sum->string != h.hexdigest())
      rd.bad("checksum mismatch (the file was modified or corrupted)");
  }

  // 4. The fields the scorer needs.
  auto state = std::make_shared<State>();
  ModelInfo& mi = state->info;
  mi.metadata_json = text;
  mi.format = kFormatName;
  mi.format_version = static_cast<int>(ver->number);
  const detail::Json* sv = meta.find("structcore_version");
  if (sv != nullptr && sv->type == detail::Json::Type::String) mi.structcore_version = sv->string;
  mi.backbone = rd.str(meta, "backbone", "");
  mi.layers = rd.strings(meta, "layers", "");
  mi.weights_sha256 = rd.str(meta, "weights_sha256", "");
  const detail::Json& config = rd.member(meta, "config", "");
  if (config.type != detail::Json::Type::Object) rd.bad("metadata field 'config' is not an object");
  mi.crop = rd.integer(config, "crop", "config", 1, kAnomalyMapMaxSide);
  mi.resize = rd.integer(config, "resize", "config", 1, kAnomalyMapMaxSide);
  mi.k = rd.integer(config, "k", "config", 1, std::numeric_limits<std::int32_t>::max());
  mi.sigma = rd.number(config, "sigma", "config");
  if (!(mi.sigma >= 0.0 && mi.sigma <= kAnomalyMapMaxSigma))
    rd.bad("metadata field 'config.sigma' must be in [0, 1000] pixels");
  mi.reweight = rd.boolean(config, "reweight", "config");
  mi.norm = rd.str(config, "norm", "config");
  if (mi.norm != "l2" && mi.norm != "linf")
    rd.bad("metadata field 'config.norm' must be 'l2' or 'linf'; got '" + mi.norm + "'");
  mi.calibration = rd.str(config, "calibration", "config");

  mi.components = rd.strings(meta, "components", "");
  if (mi.components.empty()) rd.bad("metadata field 'components' is empty");
  const std::vector<std::string> stored = rd.strings(meta, "stored_components", "");
  const std::vector<std::string> modes = rd.strings(meta, "calibration_modes", "");
  for (const auto& c : mi.components) {
    std::int32_t code = 0;
    double q = 0.0;
    if (!parse_component(c, &code, &q))
      rd.bad("unknown descriptor component '" + c + "' in metadata field 'components'");
    if (std::find(stored.begin(), stored.end(), c) == stored.end())
      rd.bad("arrays inconsistent with the metadata (components/modes)");
    state->descriptor.codes.push_back(code);
    state->descriptor.quantiles.push_back(q);
  }
  // calibration="synthetic" is fitted on the cross-fitted maps (calibration.map_mode).
  const bool synthetic = mi.calibration == "synthetic";
  const std::string map_mode = synthetic ? std::string("crossfit") : mi.calibration;
  if (std::find(modes.begin(), modes.end(), map_mode) == modes.end())
    rd.bad("arrays inconsistent with the metadata (components/modes)");

  const detail::Json& fitted = rd.member(meta, "fitted", "");
  mi.lambda = rd.number(fitted, "lambda", "fitted");
  mi.decision_threshold = rd.number(fitted, "decision_threshold", "fitted");
  mi.pixel_threshold = rd.number(fitted, "pixel_threshold", "fitted");
  mi.n_train = rd.integer(fitted, "n_train", "fitted", 0, std::numeric_limits<std::int64_t>::max());
  mi.feature_dim = rd.integer(meta, "feature_dim", "", 1, std::numeric_limits<std::int32_t>::max());
  const detail::Json& grid = rd.member(meta, "feature_grid", "");
  if (grid.type != detail::Json::Type::Array || grid.array.size() != 2)
    rd.bad("metadata field 'feature_grid' must be [h, w]");
  for (int i = 0; i < 2; ++i) {
    const detail::Json& g = grid.array[i];
    if (g.type != detail::Json::Type::Number || !g.integral || !g.integer_fits || g.integer < 1 ||
        g.integer > kAnomalyMapMaxSide)
      rd.bad("metadata field 'feature_grid' must hold two integers in [1, 16384]");
    (i == 0 ? mi.grid_h : mi.grid_w) = g.integer;
  }
  mi.top_ratio = kTopRatio;
  mi.connectivity = kConnectivity;

  // 5. Arrays against the fields.
  const std::int64_t n_comp = static_cast<std::int64_t>(mi.components.size());
  const NpyArray& bank = arrays.at("bank");  // exists: the checks above passed
  if (!(bank.descr == "<f4" && bank.shape.size() == 2 && bank.shape[1] == mi.feature_dim &&
        bank.shape[0] >= 1))
    rd.bad("arrays inconsistent with the metadata (bank: dtype " + bank.descr + " shape " +
           shape_str(bank.shape) + ", expected <f4 [n_bank >= 1, " +
           std::to_string(mi.feature_dim) + "])");
  mi.n_bank = bank.shape[0];
  if (mi.k > mi.n_bank)
    rd.bad("config.k = " + std::to_string(mi.k) + " exceeds the " + std::to_string(mi.n_bank) +
           " bank vectors");
  state->bank.vectors = bank.to_float32();
  state->bank.n_bank = mi.n_bank;
  state->bank.dim = mi.feature_dim;
  for (float v : state->bank.vectors)
    if (!std::isfinite(v)) rd.bad("the bank holds NaN or Inf");

  auto mu_it = arrays.find("mu");
  auto sd_it = arrays.find("sigma");
  if (mu_it == arrays.end() || sd_it == arrays.end() || mu_it->second.descr != "<f8" ||
      sd_it->second.descr != "<f8" || mu_it->second.shape != std::vector<std::int64_t>{n_comp} ||
      sd_it->second.shape != std::vector<std::int64_t>{n_comp})
    rd.bad("arrays inconsistent with the metadata (mu/sigma: expected <f8 [" +
           std::to_string(n_comp) + "], one value per component)");
  mi.mu = mu_it->second.to_float64();
  mi.sigma_phi = sd_it->second.to_float64();
  for (std::size_t i = 0; i < mi.mu.size(); ++i)
    if (!std::isfinite(mi.mu[i]) || !(mi.sigma_phi[i] > 0.0))
      rd.bad("arrays inconsistent with the metadata (sigma must be > 0)");
  // The learned weights: present exactly for calibration "synthetic", version 3 only.
  auto w_it = arrays.find("weights");
  if (w_it == arrays.end()) {
    if (synthetic) rd.bad("calibration 'synthetic' needs the 'weights' entry (learned weights)");
  } else {
    if (!synthetic)
      rd.bad("a 'weights' entry with calibration '" + mi.calibration + "' (only 'synthetic')");
    if (mi.format_version < kWeightsVersion)
      rd.bad("a 'weights' entry in a version " + std::to_string(mi.format_version) +
             " file (version 3 introduced it)");
    if (w_it->second.descr != "<f8" || w_it->second.shape != std::vector<std::int64_t>{n_comp})
      rd.bad("arrays inconsistent with the metadata (weights: dtype " + w_it->second.descr +
             " shape " + shape_str(w_it->second.shape) + ", expected <f8 [" +
             std::to_string(n_comp) + "], one value per component)");
    mi.weights = w_it->second.to_float64();
    for (double v : mi.weights)
      if (!std::isfinite(v)) rd.bad("the weights hold NaN or Inf values");
  }
  for (const auto& mode : modes) {
    auto phi = arrays.find("train_phi." + mode);
    auto mx = arrays.find("train_max." + mode);
    const std::vector<std::int64_t> phi_shape{mi.n_train, static_cast<std::int64_t>(stored.size())};
    const std::vector<std::int64_t> mx_shape{mi.n_train};
    if (phi == arrays.end() || mx == arrays.end() || phi->second.shape != phi_shape ||
        mx->second.shape != mx_shape)
      rd.bad("arrays inconsistent with the metadata (train arrays of mode '" + mode + "')");
  }

  const std::int64_t n_pixels = mi.crop * mi.crop;
  state->descriptor.top_k =
      std::max<std::int64_t>(1, round_half_even(kTopRatio * double(n_pixels)));
  state->descriptor.threshold = mi.pixel_threshold;
  state->descriptor.connectivity = kConnectivity;
  state->mapper.crop = mi.crop;
  state->mapper.sigma = mi.sigma;
  state->calibrator.mu = mi.mu;
  state->calibrator.sigma = mi.sigma_phi;
  state->calibrator.norm = mi.norm;
  state->calibrator.lambda = mi.lambda;
  state->calibrator.weights = mi.weights;
  state->calibrator.decision_threshold = mi.decision_threshold;
  return Scorer(std::move(state));
}

Scorer Scorer::load(const std::string& path) {
  const std::string what = "the model file '" + path + "'";
  const std::vector<std::uint8_t> buf = detail::read_file(path, what);
  return from_memory(buf.data(), buf.size(), "'" + path + "'");
}

const ModelInfo& Scorer::info() const noexcept { return state_->info; }
const std::vector<float>& Scorer::bank() const noexcept { return state_->bank.vectors; }

ScoreResult Scorer::score(const float* features, std::int64_t n_images, std::int64_t height,
                          std::int64_t width, std::int64_t dim, int threads) const {
  const ModelInfo& mi = state_->info;
  if (n_images < 0) throw std::invalid_argument("n_images must be >= 0");
  ScoreResult r;
  r.n_images = n_images;
  r.height = mi.crop;
  r.width = mi.crop;
  r.n_components = static_cast<std::int64_t>(mi.components.size());
  const std::int64_t n_map = checked_mul(n_images, mi.crop * mi.crop, "maps");
  const std::int64_t n_phi = checked_mul(n_images, r.n_components, "descriptor");
  r.maps.resize(static_cast<std::size_t>(n_map));
  r.score_max.resize(static_cast<std::size_t>(n_images));
  r.score_struct.resize(static_cast<std::size_t>(n_images));
  r.score.resize(static_cast<std::size_t>(n_images));
  r.descriptor.resize(static_cast<std::size_t>(n_phi));
  r.z.resize(static_cast<std::size_t>(n_phi));
  r.is_anomalous.resize(static_cast<std::size_t>(n_images));
  ScoreBuffers b;
  b.maps = r.maps.data();
  b.score_max = r.score_max.data();
  b.score_struct = r.score_struct.data();
  b.score = r.score.data();
  b.descriptor = r.descriptor.data();
  b.z = r.z.data();
  b.is_anomalous = r.is_anomalous.data();
  score_into(features, n_images, height, width, dim, b, threads);
  return r;
}

void Scorer::score_into(const float* features, std::int64_t n_images, std::int64_t height,
                        std::int64_t width, std::int64_t dim, const ScoreBuffers& out,
                        int threads) const {
  const State& st = *state_;
  const ModelInfo& mi = st.info;
  if (n_images < 0) throw std::invalid_argument("n_images must be >= 0");
  if (height != mi.grid_h || width != mi.grid_w || dim != mi.feature_dim)
    throw std::invalid_argument(
        "features have shape (B, " + std::to_string(height) + ", " + std::to_string(width) +
        ", " + std::to_string(dim) + ") but the model expects (B, " + std::to_string(mi.grid_h) +
        ", " + std::to_string(mi.grid_w) + ", " + std::to_string(mi.feature_dim) +
        ") (its backbone '" + mi.backbone + "' at crop " + std::to_string(mi.crop) + " px)");
  if (n_images == 0) return;
  if (features == nullptr) throw std::invalid_argument("features is null");
  const std::int64_t P = mi.grid_h * mi.grid_w;  // patches per image
  const std::int64_t D = mi.feature_dim;
  const std::int64_t per_image = checked_mul(P, D, "features");
  const std::int64_t total = checked_mul(n_images, per_image, "features");
  for (std::int64_t i = 0; i < total; ++i)
    if (!std::isfinite(features[i]))
      throw std::invalid_argument("features must be finite; found NaN or Inf in image " +
                                  std::to_string(i / per_image));

  const std::int64_t N = mi.crop * mi.crop;
  const std::int64_t F = static_cast<std::int64_t>(mi.components.size());
  const std::int64_t k = mi.k;
  // Images per chunk: keeps the internal buffers (maps when the caller does not want them,
  // kNN results) to about 64 MiB whatever the batch size.
  const std::int64_t chunk =
      std::max<std::int64_t>(1, std::min<std::int64_t>(n_images, (std::int64_t(1) << 24) /
                                                                     std::max(N, P * k)));
  std::vector<float> dist(static_cast<std::size_t>(chunk * P * k));
  std::vector<std::int64_t> idx(static_cast<std::size_t>(chunk * P * k));
  std::vector<float> pscores(static_cast<std::size_t>(chunk * P));
  std::vector<float> own_maps(out.maps ? 0 : static_cast<std::size_t>(chunk * N));
  std::vector<double> phi(static_cast<std::size_t>(chunk * F));
  std::vector<double> smax(static_cast<std::size_t>(chunk));
  std::vector<double> zrow(static_cast<std::size_t>(F));

  // The stages, as Detector.predict runs them (scorer_stages.hpp).
  for (std::int64_t i0 = 0; i0 < n_images; i0 += chunk) {
    const std::int64_t c = std::min(chunk, n_images - i0);
    const float* feats = features + i0 * per_image;
    st.bank.search(feats, c * P, k, dist.data(), idx.data(), pscores.data(), threads);
    float* maps = out.maps ? out.maps + i0 * N : own_maps.data();
    st.mapper.map(pscores.data(), c, mi.grid_h, mi.grid_w, maps, threads);
    st.mapper.max_scores(maps, c, smax.data());
    if (mi.reweight)
      st.bank.reweight(feats, c, P, pscores.data(), idx.data(), k, smax.data(), threads);
    st.descriptor.describe(maps, c, mi.crop, phi.data(), threads);
    for (std::int64_t i = 0; i < c; ++i) {
      const std::int64_t g = i0 + i;
      double s = 0.0;
      bool decision = false;
      const double d =
          st.calibrator.transform(phi.data() + i * F, smax[i], zrow.data(), &s, &decision);
      if (out.score_max) out.score_max[g] = smax[i];
      if (out.score_struct) out.score_struct[g] = d;
      if (out.score) out.score[g] = s;
      if (out.descriptor)
        std::copy(phi.begin() + i * F, phi.begin() + (i + 1) * F, out.descriptor + g * F);
      if (out.z) std::copy(zrow.begin(), zrow.end(), out.z + g * F);
      if (out.is_anomalous) out.is_anomalous[g] = decision ? 1 : 0;
    }
  }
}

}  // namespace structcore
