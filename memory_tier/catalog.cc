#include "memory_tier/catalog.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/crc32c.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace engram {
namespace {

constexpr size_t kDefaultCf = 0;
constexpr size_t kStatsCf = 1;

void AppendU32(std::string* s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void AppendU64(std::string* s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t ReadU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string TableKeyPrefix(char kind, absl::string_view model, uint32_t layer) {
  std::string k;
  k.push_back(kind);
  k.push_back('\0');
  k.append(model.data(), model.size());
  k.push_back('\0');
  AppendU32(&k, layer);
  return k;
}

std::string StatsPrefix(absl::string_view model, uint32_t layer) {
  std::string k(model.data(), model.size());
  k.push_back('\0');
  AppendU32(&k, layer);
  return k;
}

// The smallest key greater than every key starting with `prefix`.
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<uint8_t>(prefix.back()) == 0xff) prefix.pop_back();
  if (!prefix.empty()) prefix.back() = static_cast<char>(static_cast<uint8_t>(prefix.back()) + 1);
  return prefix;
}

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return absl::FailedPreconditionError(absl::StrCat(
        what,
        ": the catalog is in use by another process (a running engram-memory or another "
        "import?); stop it first (",
        s.ToString(), ")"));
  }
  return absl::InternalError(msg);
}

nlohmann::json RecordToJson(const TableRecord& r) {
  nlohmann::json j = {{"model", r.model},
                      {"layer", r.layer},
                      {"live_version", r.live_version},
                      {"versions", r.versions}};
  if (r.reimport_version != 0) {
    j["reimport"] = {{"version", r.reimport_version}, {"reason", r.reimport_reason}};
  }
  return j;
}

absl::StatusOr<TableRecord> RecordFromJson(absl::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError("catalog table record is not valid JSON");
  }
  TableRecord r;
  try {
    r.model = j.at("model").get<std::string>();
    r.layer = j.at("layer").get<uint32_t>();
    r.live_version = j.at("live_version").get<uint64_t>();
    r.versions = j.at("versions").get<std::vector<uint64_t>>();
    if (auto it = j.find("reimport"); it != j.end()) {  // absent in records of older builds
      r.reimport_version = it->at("version").get<uint64_t>();
      r.reimport_reason = it->at("reason").get<std::string>();
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("catalog table record: ", e.what()));
  }
  return r;
}

bool SafeFileName(absl::string_view s) {
  if (s.empty() || s == "." || s == ".." || s.size() > 100) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string SanitizedModelName(absl::string_view model) {
  std::string name;
  for (char c : model.substr(0, 64)) {
    name.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ? c : '_');
  }
  return name;
}

std::string TableDir(const std::string& store_dir, absl::string_view model, uint32_t layer) {
  const std::string name = SafeFileName(model)
                               ? std::string(model)
                               : absl::StrFormat("%s-%08x", SanitizedModelName(model),
                                                 Crc32c(0, model.data(), model.size()));
  return absl::StrCat(store_dir, "/tables/", name, "/layer-", layer);
}

std::string RowFileName(uint64_t version) { return absl::StrCat("v", version, ".rows"); }
std::string ManifestFileName(uint64_t version) {
  return absl::StrCat("v", version, ".manifest.json");
}

absl::StatusOr<std::unique_ptr<Catalog>> Catalog::Open(const std::string& store_dir, Mode mode) {
  auto c = std::unique_ptr<Catalog>(new Catalog());
  c->store_dir_ = store_dir;
  c->read_only_ = mode == Mode::kReadOnly;
  const std::string path = store_dir + "/catalog";
  rocksdb::DBOptions options;
  options.create_if_missing = !c->read_only_;
  options.create_missing_column_families = !c->read_only_;
  options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  options.keep_log_file_num = 2;
  options.max_open_files = 64;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {"stats", rocksdb::ColumnFamilyOptions()}};
  rocksdb::DB* db = nullptr;
  rocksdb::Status s;
  if (c->read_only_) {
    if (!std::filesystem::exists(path + "/CURRENT")) {
      return absl::NotFoundError(absl::StrCat("no catalog in ", store_dir,
                                              " (nothing imported yet? run engram table import)"));
    }
    s = rocksdb::DB::OpenForReadOnly(options, path, cfs, &c->handles_, &db);
  } else {
    std::error_code ec;
    std::filesystem::create_directories(store_dir, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create store directory ", store_dir, ": ", ec.message()));
    }
    s = rocksdb::DB::Open(options, path, cfs, &c->handles_, &db);
  }
  ENGRAM_RETURN_IF_ERROR(FromRocks(s, absl::StrCat("opening catalog ", path)));
  c->db_.reset(db);
  return c;
}

Catalog::~Catalog() {
  if (db_) {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close().PermitUncheckedError();
  }
}

absl::StatusOr<std::vector<TableRecord>> Catalog::ListTables() const {
  std::vector<TableRecord> out;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), handles_[kDefaultCf]));
  const std::string prefix("T\0", 2);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    ENGRAM_ASSIGN_OR_RETURN(TableRecord r, RecordFromJson(it->value().ToString()));
    out.push_back(std::move(r));
  }
  ENGRAM_RETURN_IF_ERROR(FromRocks(it->status(), "listing catalog tables"));
  return out;
}

absl::StatusOr<std::optional<TableRecord>> Catalog::GetTable(absl::string_view model,
                                                             uint32_t layer) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), handles_[kDefaultCf],
                               TableKeyPrefix('T', model, layer), &value);
  if (s.IsNotFound()) return std::optional<TableRecord>();
  ENGRAM_RETURN_IF_ERROR(FromRocks(s, "reading catalog"));
  ENGRAM_ASSIGN_OR_RETURN(TableRecord r, RecordFromJson(value));
  return std::optional<TableRecord>(std::move(r));
}

absl::StatusOr<Manifest> Catalog::GetManifest(absl::string_view model, uint32_t layer,
                                              uint64_t version) const {
  std::string key = TableKeyPrefix('V', model, layer);
  AppendU64(&key, version);
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), handles_[kDefaultCf], key, &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("table ", model, " layer ", layer, " has no version ", version));
  }
  ENGRAM_RETURN_IF_ERROR(FromRocks(s, "reading catalog"));
  nlohmann::json j = nlohmann::json::parse(value, nullptr, false);
  auto m = Manifest::FromJson(j);
  if (!m.ok()) {
    return absl::DataLossError(absl::StrCat("catalog manifest of ", model, " layer ", layer, " v",
                                            version, ": ", m.status().message()));
  }
  return m;
}

absl::Status Catalog::PutTableRecord(void* batch, const TableRecord& r) {
  return FromRocks(
      static_cast<rocksdb::WriteBatch*>(batch)->Put(
          handles_[kDefaultCf], TableKeyPrefix('T', r.model, r.layer), RecordToJson(r).dump()),
      "writing catalog");
}

absl::Status Catalog::CommitVersions(absl::Span<const Manifest> manifests) {
  if (read_only_) return absl::FailedPreconditionError("catalog opened read-only");
  rocksdb::WriteBatch batch;
  for (const Manifest& m : manifests) {
    ENGRAM_ASSIGN_OR_RETURN(std::optional<TableRecord> existing, GetTable(m.model, m.layer));
    TableRecord r = existing.value_or(TableRecord{m.model, m.layer, 0, {}});
    if (std::find(r.versions.begin(), r.versions.end(), m.version) != r.versions.end()) {
      return absl::AlreadyExistsError(
          absl::StrCat("table ", m.model, " layer ", m.layer, " already has version ", m.version));
    }
    r.versions.push_back(m.version);
    std::sort(r.versions.begin(), r.versions.end());
    r.live_version = m.version;
    r.reimport_version = 0;  // a new version replaces the one marked
    r.reimport_reason.clear();
    std::string key = TableKeyPrefix('V', m.model, m.layer);
    AppendU64(&key, m.version);
    ENGRAM_RETURN_IF_ERROR(
        FromRocks(batch.Put(handles_[kDefaultCf], key, m.ToJson().dump()), "writing catalog"));
    ENGRAM_RETURN_IF_ERROR(PutTableRecord(&batch, r));
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Write(wo, &batch), "committing catalog");
}

absl::Status Catalog::SetLive(absl::Span<const LiveVersion> tables) {
  if (read_only_) return absl::FailedPreconditionError("catalog opened read-only");
  rocksdb::WriteBatch batch;
  for (const LiveVersion& t : tables) {
    ENGRAM_ASSIGN_OR_RETURN(std::optional<TableRecord> r, GetTable(t.model, t.layer));
    if (!r) {
      return absl::NotFoundError(absl::StrCat("no table ", t.model, " layer ", t.layer));
    }
    if (std::find(r->versions.begin(), r->versions.end(), t.version) == r->versions.end()) {
      return absl::NotFoundError(
          absl::StrCat("table ", t.model, " layer ", t.layer, " has no version ", t.version,
                       " (versions: ", absl::StrJoin(r->versions, ", "), ")"));
    }
    r->live_version = t.version;
    ENGRAM_RETURN_IF_ERROR(PutTableRecord(&batch, *r));
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Write(wo, &batch), "committing catalog");
}

absl::Status Catalog::MarkForReimport(absl::string_view model, uint32_t layer, uint64_t version,
                                     absl::string_view reason) {
  if (read_only_) return absl::FailedPreconditionError("catalog opened read-only");
  ENGRAM_ASSIGN_OR_RETURN(std::optional<TableRecord> r, GetTable(model, layer));
  if (!r) return absl::NotFoundError(absl::StrCat("no table ", model, " layer ", layer));
  r->reimport_version = version;
  r->reimport_reason = std::string(reason);
  rocksdb::WriteBatch batch;
  ENGRAM_RETURN_IF_ERROR(PutTableRecord(&batch, *r));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Write(wo, &batch), "marking a table for re-import");
}

absl::Status Catalog::SaveStats(absl::string_view model, uint32_t layer,
                                absl::Span<const RowCount> counts) {
  if (read_only_) return absl::FailedPreconditionError("catalog opened read-only");
  const std::string prefix = StatsPrefix(model, layer);
  rocksdb::WriteBatch batch;
  ENGRAM_RETURN_IF_ERROR(FromRocks(batch.DeleteRange(handles_[kStatsCf], prefix, PrefixEnd(prefix)),
                                   "writing statistics"));
  for (const RowCount& rc : counts) {
    std::string key = prefix;
    AppendU64(&key, rc.row);
    char value[8];
    std::memcpy(value, &rc.count, 8);
    ENGRAM_RETURN_IF_ERROR(FromRocks(batch.Put(handles_[kStatsCf], key, rocksdb::Slice(value, 8)),
                                     "writing statistics"));
  }
  return FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "writing statistics");
}

absl::StatusOr<std::vector<RowCount>> Catalog::LoadStats(absl::string_view model, uint32_t layer,
                                                         size_t limit) const {
  const std::string prefix = StatsPrefix(model, layer);
  std::vector<RowCount> out;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), handles_[kStatsCf]));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    if (it->key().size() != prefix.size() + 8 || it->value().size() != 8) continue;
    RowCount rc;
    rc.row = ReadU64(it->key().data() + prefix.size());
    std::memcpy(&rc.count, it->value().data(), 8);
    out.push_back(rc);
  }
  ENGRAM_RETURN_IF_ERROR(FromRocks(it->status(), "reading statistics"));
  std::sort(out.begin(), out.end(), Hotter);
  if (limit > 0 && out.size() > limit) out.resize(limit);
  return out;
}

}  // namespace engram
