// Binding of structcore::Scorer (the C++ inference path of a saved Detector) as
// structcore._core.Scorer. Public access: structcore.scorer.Scorer (validated).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "structcore/npy.hpp"
#include "structcore/scorer.hpp"
#include "structcore/structcore.h"

namespace py = pybind11;

void bind_scorer(py::module_& m) {
  // FormatError derives from std::invalid_argument -> ValueError (pybind11's default);
  // IoError -> OSError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const structcore::IoError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });

  py::class_<structcore::Scorer>(m, "Scorer",
                                 "A model saved by Detector.save, loaded by the C++ core.")
      .def(py::init([](const std::string& path) {
             py::gil_scoped_release release;
             return structcore::Scorer::load(path);
           }),
           py::arg("path"), "Load the model file at path (ValueError when malformed).")
      .def_static(
          "from_bytes",
          [](py::bytes data) {
            const std::string s = data;  // one copy; the GIL is held while copying
            py::gil_scoped_release release;
            return structcore::Scorer::from_memory(s.data(), s.size(), "<bytes>");
          },
          py::arg("data"), "Load a model from the bytes of a model file.")
      .def_property_readonly("info",
                             [](const structcore::Scorer& s) {
                               const structcore::ModelInfo& mi = s.info();
                               py::dict d;
                               d["format"] = mi.format;
                               d["format_version"] = mi.format_version;
                               d["structcore_version"] = mi.structcore_version;
                               d["backbone"] = mi.backbone;
                               d["layers"] = mi.layers;
                               d["weights_sha256"] = mi.weights_sha256;
                               d["resize"] = mi.resize;
                               d["crop"] = mi.crop;
                               d["feature_dim"] = mi.feature_dim;
                               d["feature_grid"] = py::make_tuple(mi.grid_h, mi.grid_w);
                               d["n_bank"] = mi.n_bank;
                               d["k"] = mi.k;
                               d["sigma"] = mi.sigma;
                               d["reweight"] = mi.reweight;
                               d["components"] = mi.components;
                               d["norm"] = mi.norm;
                               d["calibration"] = mi.calibration;
                               d["mu"] = mi.mu;
                               d["sigma_phi"] = mi.sigma_phi;
                               d["lambda"] = mi.lambda;
                               d["weights"] = mi.weights;
                               d["decision_threshold"] = mi.decision_threshold;
                               d["pixel_threshold"] = mi.pixel_threshold;
                               d["top_ratio"] = mi.top_ratio;
                               d["connectivity"] = mi.connectivity;
                               d["n_train"] = mi.n_train;
                               d["metadata_json"] = mi.metadata_json;
                               return d;
                             },
                             "What the model file says about itself (a dict).")
      .def(
          "score",
          [](const structcore::Scorer& s, py::array_t<float, py::array::c_style> features,
             int threads) {
            if (features.ndim() != 4)
              throw std::invalid_argument("features must be 4-dimensional (B, h, w, dim)");
            const std::int64_t b = features.shape(0), h = features.shape(1),
                               w = features.shape(2), d = features.shape(3);
            const std::int64_t side = s.info().crop;
            const auto f = static_cast<std::int64_t>(s.info().components.size());
            py::array_t<float> maps({b, side, side});
            py::array_t<double> smax(b), sstruct(b), score(b);
            py::array_t<double> phi({b, f}), z({b, f});
            py::array_t<bool> anomalous(b);
            structcore::ScoreBuffers out;
            out.maps = maps.mutable_data();
            out.score_max = smax.mutable_data();
            out.score_struct = sstruct.mutable_data();
            out.score = score.mutable_data();
            out.descriptor = phi.mutable_data();
            out.z = z.mutable_data();
            static_assert(sizeof(bool) == 1, "bool must be one byte");
            out.is_anomalous = reinterpret_cast<std::uint8_t*>(anomalous.mutable_data());
            const float* pf = features.data();
            {
              py::gil_scoped_release release;
              s.score_into(pf, b, h, w, d, out, threads);
            }
            py::dict r;
            r["maps"] = maps;
            r["score_max"] = smax;
            r["score_struct"] = sstruct;
            r["score"] = score;
            r["descriptor"] = phi;
            r["z"] = z;
            r["is_anomalous"] = anomalous;
            return r;
          },
          py::arg("features").noconvert(), py::arg("threads"),
          "Score features (B, h, w, dim) float32 C-contiguous with threads (<= 0: all) -> dict\n"
          "of maps (B, crop, crop) float32, score_max, score_struct, score (B,) float64,\n"
          "descriptor, z (B, F) float64, is_anomalous (B,) bool. Unvalidated: use\n"
          "structcore.scorer.Scorer.");
  m.def("version", [] { return std::string(structcore::version()); },
        "Version of the C++ core.");
  // Referencing the C ABI links c_api.o into this module, so its structcore_* symbols can be
  // called through ctypes.CDLL(structcore._core.__file__) (tests, quick C-ABI experiments).
  m.def("c_abi_version", &structcore_abi_version,
        "STRUCTCORE_ABI_VERSION of the C ABI (structcore.h) compiled into this module.");
}
