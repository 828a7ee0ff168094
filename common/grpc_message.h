// Requests and responses as bytes, for services whose methods are registered raw
// (WithRawCallbackMethod_*): gRPC's own callback handlers answer a request they cannot parse
// (garbage, or a string field that is not UTF-8) with a bare UNIMPLEMENTED that tells the client
// nothing; a raw method parses with ParseMessage and answers INVALID_ARGUMENT naming the message.
#ifndef ENGRAM_COMMON_GRPC_MESSAGE_H_
#define ENGRAM_COMMON_GRPC_MESSAGE_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/impl/codegen/proto_utils.h"  // SerializationTraits for protobuf messages
#include "grpcpp/support/byte_buffer.h"

namespace engram {

// Parses `bytes` as a `Message`; INVALID_ARGUMENT naming the message type when they are not one.
// `bytes` is left as it was.
template <typename Message>
absl::Status ParseMessage(const grpc::ByteBuffer& bytes, Message* message) {
  grpc::ByteBuffer copy(bytes);  // Deserialize consumes its buffer; the copy shares the slices
  if (!grpc::SerializationTraits<Message>::Deserialize(&copy, message).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request is not a valid ", Message::descriptor()->full_name(),
                     " (malformed, or a string field that is not UTF-8)"));
  }
  return absl::OkStatus();
}

template <typename Message>
absl::StatusOr<Message> ParseMessage(const grpc::ByteBuffer& bytes) {
  Message message;
  absl::Status s = ParseMessage(bytes, &message);
  if (!s.ok()) return s;
  return message;
}

// Replaces `out` by the serialized `message`.
template <typename Message>
void SerializeMessage(const Message& message, grpc::ByteBuffer* out) {
  out->Clear();
  bool own_buffer;
  // Serializing a proto3 message into memory cannot fail.
  (void)grpc::SerializationTraits<Message>::Serialize(message, out, &own_buffer);
}

}  // namespace engram

#endif  // ENGRAM_COMMON_GRPC_MESSAGE_H_
