//! The prost codec every generated client and server uses, with small first
//! buffers: each gRPC stream starts with 1 KiB to encode into and 1 KiB to
//! decode from, where tonic's default is 8 KiB each; buffers grow as a
//! message needs. A chat-core holds a `Connect` stream per client socket
//! (and a gateway the other end of it), so for idle sockets this is most of
//! what a stream costs.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::BufferSettings;
use tonic_prost::{ProstDecoder, ProstEncoder};

/// First size of a stream's encode and decode buffers.
const BUFFER_BYTES: usize = 1024;
/// Encoded bytes a stream gathers before handing them to the transport
/// (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// [`tonic_prost::ProstCodec`] with [`BUFFER_BYTES`] first buffers.
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}
