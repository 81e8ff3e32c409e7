/*
 * The one table that ties each RPC of the Compute service to its ops member,
 * the feature that gates it, and its message types. Serving dispatch, feature
 * derivation and the hosting half's typed calls are all generated from it, so
 * adding an RPC is one line here plus its handler.
 *
 * X(op member, Method name, feature, request type, response type, generated snake name)
 */
#ifndef DRV_RPC_TABLE_H
#define DRV_RPC_TABLE_H

#define DRV_RPC_TABLE(X)                                                                                     \
	X(get_offers, GetOffers, DRV_FEATURE_OFFERS, drv_get_offers_request, drv_get_offers_response,        \
	  get_offers)                                                                                        \
	X(create_instance, CreateInstance, DRV_FEATURE_CREATE_INSTANCE, drv_create_instance_request,         \
	  drv_create_instance_response, create_instance)                                                     \
	X(get_instance, GetInstance, DRV_FEATURE_CREATE_INSTANCE, drv_get_instance_request,                  \
	  drv_get_instance_response, get_instance)                                                           \
	X(terminate_instance, TerminateInstance, DRV_FEATURE_CREATE_INSTANCE,                                \
	  drv_terminate_instance_request, drv_terminate_instance_response, terminate_instance)               \
	X(list_instances, ListInstances, DRV_FEATURE_CREATE_INSTANCE, drv_list_instances_request,            \
	  drv_list_instances_response, list_instances)                                                       \
	X(create_placement_group, CreatePlacementGroup, DRV_FEATURE_PLACEMENT_GROUPS,                        \
	  drv_create_placement_group_request, drv_create_placement_group_response, create_placement_group)   \
	X(delete_placement_group, DeletePlacementGroup, DRV_FEATURE_PLACEMENT_GROUPS,                        \
	  drv_delete_placement_group_request, drv_delete_placement_group_response, delete_placement_group)   \
	X(create_volume, CreateVolume, DRV_FEATURE_VOLUMES, drv_create_volume_request,                       \
	  drv_create_volume_response, create_volume)                                                         \
	X(register_volume, RegisterVolume, DRV_FEATURE_VOLUMES, drv_register_volume_request,                 \
	  drv_register_volume_response, register_volume)                                                     \
	X(delete_volume, DeleteVolume, DRV_FEATURE_VOLUMES, drv_delete_volume_request,                       \
	  drv_delete_volume_response, delete_volume)                                                         \
	X(attach_volume, AttachVolume, DRV_FEATURE_VOLUMES, drv_attach_volume_request,                       \
	  drv_attach_volume_response, attach_volume)                                                         \
	X(detach_volume, DetachVolume, DRV_FEATURE_VOLUMES, drv_detach_volume_request,                       \
	  drv_detach_volume_response, detach_volume)                                                         \
	X(create_gateway, CreateGateway, DRV_FEATURE_GATEWAYS, drv_create_gateway_request,                   \
	  drv_create_gateway_response, create_gateway)                                                       \
	X(terminate_gateway, TerminateGateway, DRV_FEATURE_GATEWAYS, drv_terminate_gateway_request,          \
	  drv_terminate_gateway_response, terminate_gateway)

/* Identity RPCs every driver answers; not gated by a feature. */
#define DRV_IDENTITY_RPC_TABLE(X)                                                                            \
	X(get_info, GetInfo, 0, drv_get_info_request, drv_get_info_response, get_info)                       \
	X(get_features, GetFeatures, 0, drv_get_features_request, drv_get_features_response, get_features)   \
	X(validate_config, ValidateConfig, 0, drv_validate_config_request, drv_validate_config_response,     \
	  validate_config)

#define DRV_COMPUTE_SERVICE "drover.compute.v1.Compute"
#define DRV_HEALTH_SERVICE "grpc.health.v1.Health"

#endif
