//! The MQTT wire protocol of the A node: ferrymq's packet model ([`packet`])
//! and the 3.1.1 / 5 codec that translates it to and from bytes ([`codec`]).

pub mod codec;
pub mod packet;

pub use codec::{decode, encode, CodecError, MAX_REMAINING_LENGTH};
pub use packet::{
    reason, Ack, Auth, ConnAck, ConnAckProperties, Connect, Disconnect, Packet, Protocol, Publish,
    PublishProperties, QoS, SubAck, Subscribe, SubscribeFilter, UnsubAck, Unsubscribe,
    UserProperties, Will,
};
