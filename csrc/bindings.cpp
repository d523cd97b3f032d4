// The single pybind11 module of megatron_prealign: numpy in/out around the pure C++ kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "lexicon_scan.h"

namespace py = pybind11;

namespace {

// dtype equivalence (numpy's PyArray_EquivTypes), not object identity: equal dtypes created
// separately (e.g. after unpickling) are distinct objects.
template <typename T>
bool HasDtype(const py::array& arr) {
  return py::isinstance<py::array_t<T>>(arr);
}

template <typename T>
std::vector<T> ToVector(const py::array& arr, const char* name) {
  if (arr.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D");
  if (!HasDtype<T>(arr))
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(arr.dtype())) +
                         ", expected " + std::string(py::str(py::dtype::of<T>())));
  // forcecast only to obtain a contiguous buffer; the dtype was checked above.
  auto c = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(arr);
  if (!c) throw py::error_already_set();
  return std::vector<T>(c.data(), c.data() + c.size());
}

template <typename T>
py::array_t<T> ToNumpy(const std::vector<T>& v) {
  py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
  return out;
}

template <typename T>
void ScanBuffer(const prealign::LexiconTrie& trie, const py::array& tokens, prealign::ScanMode mode,
                prealign::ScanResult* result) {
  // Zero-copy: the caller guarantees a C-contiguous 1-D buffer (checked in Scan below).
  const T* data = static_cast<const T*>(tokens.data());
  const int64_t n = static_cast<int64_t>(tokens.size());
  py::gil_scoped_release release;
  trie.Scan<T>(data, n, mode, result);
}

py::tuple Scan(const prealign::LexiconTrie& trie, const py::array& tokens, int mode) {
  if (mode != static_cast<int>(prealign::ScanMode::kWord) &&
      mode != static_cast<int>(prealign::ScanMode::kLongestMatch))
    throw py::value_error("mode must be 0 (word) or 1 (longest-match), got " + std::to_string(mode));
  if (tokens.ndim() != 1) throw py::value_error("tokens must be a 1-D array");
  if (!(tokens.flags() & py::array::c_style))
    throw py::value_error("tokens must be C-contiguous (use numpy.ascontiguousarray)");
  prealign::ScanResult result;
  const auto smode = static_cast<prealign::ScanMode>(mode);
  if (HasDtype<int32_t>(tokens)) {
    ScanBuffer<int32_t>(trie, tokens, smode, &result);
  } else if (HasDtype<uint16_t>(tokens)) {
    ScanBuffer<uint16_t>(trie, tokens, smode, &result);
  } else {
    throw py::type_error("tokens must have dtype int32 or uint16, got " +
                         std::string(py::str(tokens.dtype())));
  }
  return py::make_tuple(ToNumpy(result.starts), ToNumpy(result.lengths), ToNumpy(result.entries));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Compiled kernels of megatron_prealign (built by `pip install -e .`).";

  py::class_<prealign::LexiconTrie>(m, "LexiconTrie",
                                    "Token-id trie (CSR arrays) plus the token-class table.")
      .def(py::init([](const py::array& child_offsets, const py::array& child_tokens,
                       const py::array& child_nodes, const py::array& node_entry,
                       const py::array& token_classes) {
             try {
               return new prealign::LexiconTrie(
                   ToVector<int64_t>(child_offsets, "child_offsets"),
                   ToVector<int32_t>(child_tokens, "child_tokens"),
                   ToVector<int32_t>(child_nodes, "child_nodes"),
                   ToVector<int32_t>(node_entry, "node_entry"),
                   ToVector<uint8_t>(token_classes, "token_classes"));
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("child_offsets"), py::arg("child_tokens"), py::arg("child_nodes"),
           py::arg("node_entry"), py::arg("token_classes"))
      .def_property_readonly("num_nodes", &prealign::LexiconTrie::num_nodes)
      .def("scan", &Scan, py::arg("tokens"), py::arg("mode"),
           "scan(tokens: int32|uint16 1-D C-contiguous array, mode: 0 word | 1 longest-match)"
           " -> (starts int64, lengths int32, entry_ids int32). Releases the GIL.");
}
