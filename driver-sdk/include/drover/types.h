/*
 * drover/types.h — the data model and error codes shared by both halves of
 * libdrover-driver.
 *
 * The protobuf-c messages generated from proto/drover/compute/v1 are the one
 * model of the data: drivers, the server and the conformance harness all use
 * them. This header gives them short aliases; it adds no mirror structs.
 */
#ifndef DROVER_TYPES_H
#define DROVER_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "drover/compute/v1/compute.pb-c.h"

/* Short aliases of the generated message types. */
typedef Drover__Compute__V1__BackendConfig drv_backend_config;
typedef Drover__Compute__V1__BackendConfig__SecretsEntry drv_secret_entry;
typedef Drover__Compute__V1__GetInfoRequest drv_get_info_request;
typedef Drover__Compute__V1__GetInfoResponse drv_get_info_response;
typedef Drover__Compute__V1__GetFeaturesRequest drv_get_features_request;
typedef Drover__Compute__V1__GetFeaturesResponse drv_get_features_response;
typedef Drover__Compute__V1__ValidateConfigRequest drv_validate_config_request;
typedef Drover__Compute__V1__ValidateConfigResponse drv_validate_config_response;
typedef Drover__Compute__V1__Diagnostic drv_diagnostic;
typedef Drover__Compute__V1__UintRange drv_uint_range;
typedef Drover__Compute__V1__Requirements drv_requirements;
typedef Drover__Compute__V1__Gpu drv_gpu;
typedef Drover__Compute__V1__Resources drv_resources;
typedef Drover__Compute__V1__Offer drv_offer;
typedef Drover__Compute__V1__GetOffersRequest drv_get_offers_request;
typedef Drover__Compute__V1__GetOffersResponse drv_get_offers_response;
typedef Drover__Compute__V1__InstanceConfiguration drv_instance_configuration;
typedef Drover__Compute__V1__InstanceConfiguration__TagsEntry drv_tag_entry;
typedef Drover__Compute__V1__ProvisioningData drv_provisioning_data;
typedef Drover__Compute__V1__CreateInstanceRequest drv_create_instance_request;
typedef Drover__Compute__V1__CreateInstanceResponse drv_create_instance_response;
typedef Drover__Compute__V1__GetInstanceRequest drv_get_instance_request;
typedef Drover__Compute__V1__GetInstanceResponse drv_get_instance_response;
typedef Drover__Compute__V1__TerminateInstanceRequest drv_terminate_instance_request;
typedef Drover__Compute__V1__TerminateInstanceResponse drv_terminate_instance_response;
typedef Drover__Compute__V1__ListInstancesRequest drv_list_instances_request;
typedef Drover__Compute__V1__ListInstancesResponse drv_list_instances_response;
typedef Drover__Compute__V1__ListedInstance drv_listed_instance;
typedef Drover__Compute__V1__PlacementGroup drv_placement_group;
typedef Drover__Compute__V1__CreatePlacementGroupRequest drv_create_placement_group_request;
typedef Drover__Compute__V1__CreatePlacementGroupResponse drv_create_placement_group_response;
typedef Drover__Compute__V1__DeletePlacementGroupRequest drv_delete_placement_group_request;
typedef Drover__Compute__V1__DeletePlacementGroupResponse drv_delete_placement_group_response;
typedef Drover__Compute__V1__Volume drv_volume;
typedef Drover__Compute__V1__VolumeConfiguration drv_volume_configuration;
typedef Drover__Compute__V1__CreateVolumeRequest drv_create_volume_request;
typedef Drover__Compute__V1__CreateVolumeResponse drv_create_volume_response;
typedef Drover__Compute__V1__RegisterVolumeRequest drv_register_volume_request;
typedef Drover__Compute__V1__RegisterVolumeResponse drv_register_volume_response;
typedef Drover__Compute__V1__DeleteVolumeRequest drv_delete_volume_request;
typedef Drover__Compute__V1__DeleteVolumeResponse drv_delete_volume_response;
typedef Drover__Compute__V1__AttachVolumeRequest drv_attach_volume_request;
typedef Drover__Compute__V1__AttachVolumeResponse drv_attach_volume_response;
typedef Drover__Compute__V1__DetachVolumeRequest drv_detach_volume_request;
typedef Drover__Compute__V1__DetachVolumeResponse drv_detach_volume_response;
typedef Drover__Compute__V1__GatewayConfiguration drv_gateway_configuration;
typedef Drover__Compute__V1__Gateway drv_gateway;
typedef Drover__Compute__V1__CreateGatewayRequest drv_create_gateway_request;
typedef Drover__Compute__V1__CreateGatewayResponse drv_create_gateway_response;
typedef Drover__Compute__V1__TerminateGatewayRequest drv_terminate_gateway_request;
typedef Drover__Compute__V1__TerminateGatewayResponse drv_terminate_gateway_response;

/* Short names of the feature enum values (the enum itself is the protocol's). */
enum {
	DRV_FEATURE_OFFERS = DROVER__COMPUTE__V1__FEATURE__FEATURE_OFFERS,
	DRV_FEATURE_CREATE_INSTANCE = DROVER__COMPUTE__V1__FEATURE__FEATURE_CREATE_INSTANCE,
	DRV_FEATURE_PLACEMENT_GROUPS = DROVER__COMPUTE__V1__FEATURE__FEATURE_PLACEMENT_GROUPS,
	DRV_FEATURE_VOLUMES = DROVER__COMPUTE__V1__FEATURE__FEATURE_VOLUMES,
	DRV_FEATURE_GATEWAYS = DROVER__COMPUTE__V1__FEATURE__FEATURE_GATEWAYS,
	DRV_FEATURE_MULTINODE = DROVER__COMPUTE__V1__FEATURE__FEATURE_MULTINODE,
	DRV_FEATURE_RESERVATION = DROVER__COMPUTE__V1__FEATURE__FEATURE_RESERVATION,
	DRV_FEATURE_PRIVILEGED = DROVER__COMPUTE__V1__FEATURE__FEATURE_PRIVILEGED,
	DRV_FEATURE_PRIVATE_GATEWAYS = DROVER__COMPUTE__V1__FEATURE__FEATURE_PRIVATE_GATEWAYS,
};

/*
 * A set of features: bit N set means feature enum value N. Feature values are
 * below 64 by protocol rule.
 */
typedef uint64_t drv_features;
#define DRV_FEATURE_BIT(f) (UINT64_C(1) << (unsigned)(f))

/*
 * The feature's protocol name without the prefix ("OFFERS", "MULTINODE"),
 * taken from the generated enum descriptor, or NULL for an unknown value.
 */
const char *drv_feature_name(int feature);

/* The feature value for a name as drv_feature_name() gives it (case-insensitive), or -1. */
int drv_feature_from_name(const char *name);

/*
 * Error codes. Every SDK function returns 0 or one of these; each maps to
 * exactly one gRPC status code (src/status.c holds the only table).
 */
enum drv_error {
	DRV_OK = 0,
	DRV_ECANCELLED = -1,        /* CANCELLED */
	DRV_EUNKNOWN = -2,          /* UNKNOWN */
	DRV_EINVAL = -3,            /* INVALID_ARGUMENT */
	DRV_EDEADLINE = -4,         /* DEADLINE_EXCEEDED */
	DRV_ENOTFOUND = -5,         /* NOT_FOUND */
	DRV_EEXIST = -6,            /* ALREADY_EXISTS */
	DRV_EPERM = -7,             /* PERMISSION_DENIED */
	DRV_ENOCAPACITY = -8,       /* RESOURCE_EXHAUSTED */
	DRV_EPRECONDITION = -9,     /* FAILED_PRECONDITION */
	DRV_EABORTED = -10,         /* ABORTED */
	DRV_ERANGE = -11,           /* OUT_OF_RANGE */
	DRV_EUNIMPLEMENTED = -12,   /* UNIMPLEMENTED */
	DRV_EINTERNAL = -13,        /* INTERNAL */
	DRV_EUNAVAILABLE = -14,     /* UNAVAILABLE */
	DRV_EDATALOSS = -15,        /* DATA_LOSS */
	DRV_EUNAUTHENTICATED = -16, /* UNAUTHENTICATED */
	/* Local errors with no gRPC status of their own (sent as INTERNAL). */
	DRV_ENOMEM = -100,     /* allocation failed */
	DRV_EHANDSHAKE = -101, /* a driver's handshake line was missing or malformed */
	DRV_EPROTOCOL = -102,  /* a driver speaks another protocol version */
	DRV_ESYSTEM = -103,    /* a system call failed; errno was logged in the message */
};

/* A static English description of an error code; never NULL. */
const char *drv_strerror(int err);

/* The gRPC status code (0..16) for an error code; INTERNAL for local errors. */
int drv_error_to_grpc(int err);

/* The error code for a gRPC status code (0..16); DRV_EUNKNOWN for others. */
int drv_error_from_grpc(int grpc_code);

/* The gRPC status name ("RESOURCE_EXHAUSTED") for an error code. */
const char *drv_error_name(int err);

/* The error code for a gRPC status name ("NOT_FOUND"), or 1 if unknown. */
int drv_error_from_name(const char *name);

/* The result of a call beyond its return code (struct drv_status is filled by host and rpc calls). */
struct drv_status {
	int code;          /* 0 or a drv_error, same as the call's return value */
	char message[512]; /* the driver's status message, or ours for local errors */
};

/*
 * Frees a response that drv_rpc_call(), drv_rpc_call_async() (drover/rpc.h)
 * or a drv_host_* call (drover/host.h) returned, with everything it points
 * to: the response and its parts live in one arena (one free instead of one
 * per string and sub-message).
 * Never pass such a response to protobuf_c_message_free_unpacked(), nor
 * anything else to this function; a pointer into a response dies with it.
 * Takes `void *` so typed responses need no cast. NULL is a no-op.
 */
void drv_response_free(void *resp);

/*
 * Makes every response of type `desc` unpacked from now on keep a copy of
 * the bytes it was unpacked from, for drv_response_bytes(): for a program
 * that forwards parts of such responses verbatim instead of packing them
 * again (droverd forwards its drivers' offers). Other types pay nothing.
 * Idempotent; any thread; `desc` is borrowed for the program's lifetime.
 * Returns 0, or DRV_ENOMEM when 8 types are registered already.
 */
int drv_response_keep_bytes(const ProtobufCMessageDescriptor *desc);

/*
 * The bytes a response (as for drv_response_free()) was unpacked from, and
 * their length in *len; NULL with *len 0 when its type does not keep them
 * (or it was empty). Borrowed: valid until the response is freed.
 */
const uint8_t *drv_response_bytes(const void *resp, size_t *len);

/* The protocol version this SDK speaks (the handshake's second field). */
#define DRV_PROTOCOL_VERSION 1

#endif
